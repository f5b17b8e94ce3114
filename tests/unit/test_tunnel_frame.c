// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The tunnel's framing and its --forward option (user/mtls/tunnel_frame.c,
 * user/mtls/tunnel.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "tunnel.h"
#include "l7_snapshot.h"
#include "tunnel_authz.h"
#include "tunnel_frame.h"
#include "view_round_trip.h"

Test(tunnel_frame, header_round_trip_and_refusals)
{
	struct dmsc_tf_hdr h;
	uint8_t p[DMSC_TF_HDR];

	dmsc_tf_put_hdr(p, DMSC_TF_DATA, 16000, 0x01020305);
	cr_assert(dmsc_tf_get_hdr(p, &h));
	cr_expect_eq(h.type, DMSC_TF_DATA);
	cr_expect_eq(h.len, 16000);
	cr_expect_eq(h.stream, 0x01020305u);
	cr_expect_eq(p[2], 0x3e); /* network order */
	dmsc_tf_put_hdr(p, DMSC_TF_DATA, DMSC_TF_PAYLOAD_MAX + 1, 1);
	cr_expect_not(dmsc_tf_get_hdr(p, &h), "a payload past one TLS record");
	dmsc_tf_put_hdr(p, 7, 0, 1);
	cr_expect_not(dmsc_tf_get_hdr(p, &h), "an unknown type");
	dmsc_tf_put_hdr(p, DMSC_TF_FIN, 0, 0);
	cr_expect_not(dmsc_tf_get_hdr(p, &h), "stream 0");
	dmsc_tf_put_hdr(p, DMSC_TF_FIN, 0, 1);
	p[1] = 1;
	cr_expect_not(dmsc_tf_get_hdr(p, &h), "flags this version does not know");
}

Test(tunnel_frame, open_round_trip_and_refusals)
{
	uint8_t p[6 + DMSC_TF_ID_MAX + 1];
	char id[DMSC_TF_ID_MAX + 2];
	struct dmsc_tf_open o;
	size_t n;

	n = dmsc_tf_open_encode(p, htonl(0xc6120d02), htons(8080), "shop.slice/frontend.service");
	cr_assert_eq(n, 6 + strlen("shop.slice/frontend.service"));
	cr_assert(dmsc_tf_open_decode(p, n, &o));
	cr_expect_eq(o.dest_addr, htonl(0xc6120d02));
	cr_expect_eq(o.dest_port, htons(8080));
	cr_expect_str_eq(o.identity, "shop.slice/frontend.service");
	cr_expect_eq(dmsc_tf_open_encode(p, 1, 1, ""), 0, "an empty identity");
	memset(id, 'x', sizeof(id) - 1);
	id[sizeof(id) - 1] = '\0';
	cr_expect_eq(dmsc_tf_open_encode(p, 1, 1, id), 0, "an identity over the maximum");
	cr_expect_not(dmsc_tf_open_decode(p, 6, &o), "no identity");
	n = dmsc_tf_open_encode(p, 1, 1, "a/b");
	p[7] = '\0';
	cr_expect_not(dmsc_tf_open_decode(p, n, &o), "a NUL inside the identity");
}

Test(tunnel_frame, forward_option)
{
	struct dmsc_tunnel_forward f;
	char why[256];

	cr_assert_eq(dmsc_tunnel_forward_parse("127.0.0.1:18080=198.18.13.2:15008,198.18.13.2:8080,"
					       "shop.slice/web",
					       &f, why, sizeof(why)),
		     0, "%s", why);
	cr_expect_eq(ntohs(f.listen.sin_port), 18080);
	cr_expect_eq(f.peer.sin_addr.s_addr, inet_addr("198.18.13.2"));
	cr_expect_eq(ntohs(f.dest.sin_port), 8080);
	cr_expect_str_eq(f.identity, "shop.slice/web");
	cr_expect_eq(
	    dmsc_tunnel_forward_parse("127.0.0.1:18080=198.18.13.2:15008", &f, why, sizeof(why)),
	    -EINVAL);
	cr_expect(strstr(why, "LADDR:LPORT=PEER:PPORT,DEST:DPORT,IDENTITY") != NULL, "%s", why);
	cr_expect_eq(dmsc_tunnel_forward_parse("127.0.0.1:18080=198.18.13.2:0,1.2.3.4:5,x", &f, why,
					       sizeof(why)),
		     -EINVAL);
	cr_expect(strstr(why, "peer helper") != NULL, "%s", why);
	cr_expect_eq(
	    dmsc_tunnel_forward_parse("127.0.0.1:1=1.2.3.4:5,1.2.3.4:6,", &f, why, sizeof(why)),
	    -EINVAL);
	cr_expect(strstr(why, "identity") != NULL, "%s", why);
}

Test(tunnel_authz, paths_cover_themselves_and_their_descendants)
{
	cr_expect(dmsc_tunnel_path_covers("shop.slice/web", "shop.slice/web"));
	cr_expect(dmsc_tunnel_path_covers("shop.slice", "shop.slice/web/worker"));
	cr_expect(dmsc_tunnel_path_covers("/shop.slice/", "shop.slice/web"));
	cr_expect_not(dmsc_tunnel_path_covers("shop.slice/web", "shop.slice/webx"));
	cr_expect_not(dmsc_tunnel_path_covers("shop.slice/web", "shop.slice"));
	cr_expect_not(dmsc_tunnel_path_covers("ops.slice", "shop.slice/web"));
}

Test(tunnel_authz, the_vouched_identity_against_allow_from_of_the_backend)
{
	static const char doc[] = "{\"services\":["
				  "{\"name\":\"web\",\"vip\":\"198.19.13.1\",\"port\":80,"
				  " \"backends\":[{\"address\":\"198.18.13.2\",\"port\":8080}],"
				  " \"allow_from\":[\"shop.slice/frontend.service\"]},"
				  "{\"name\":\"admin\",\"vip\":\"198.19.13.2\",\"port\":80,"
				  " \"backends\":[{\"address\":\"198.18.13.2\",\"port\":8081}],"
				  " \"allow_from\":[\"ops.slice\"]},"
				  "{\"name\":\"open\",\"vip\":\"198.19.13.3\",\"port\":80,"
				  " \"backends\":[{\"address\":\"198.18.13.2\",\"port\":8082}]},"
				  "{\"name\":\"shared\",\"vip\":\"198.19.13.4\",\"port\":80,"
				  " \"backends\":[{\"address\":\"198.18.13.2\",\"port\":8081}],"
				  " \"allow_from\":[\"batch.slice\"]}]}";
	struct dmsc_policy_errors errs = {0};
	struct dmsc_policy p = {0};
	uint32_t b = inet_addr("198.18.13.2");

	cr_assert_eq(dmsc_policy_parse(doc, sizeof(doc) - 1, "t", &p, &errs), 0);
	cr_expect_eq(dmsc_tunnel_authorize(&p, b, 8080, "shop.slice/frontend.service"),
		     DMSC_TV_ALLOWED);
	cr_expect_eq(dmsc_tunnel_authorize(&p, b, 8080, "shop.slice/other.service"),
		     DMSC_TV_DENIED);
	cr_expect_eq(dmsc_tunnel_authorize(&p, b, 8081, "ops.slice/tool.service"), DMSC_TV_ALLOWED);
	/* a backend of two services: either one's allow_from will do */
	cr_expect_eq(dmsc_tunnel_authorize(&p, b, 8081, "batch.slice/job"), DMSC_TV_ALLOWED);
	cr_expect_eq(dmsc_tunnel_authorize(&p, b, 8081, "shop.slice/frontend.service"),
		     DMSC_TV_DENIED);
	cr_expect_eq(dmsc_tunnel_authorize(&p, b, 8082, "anyone"), DMSC_TV_ALLOWED);
	cr_expect_eq(dmsc_tunnel_authorize(&p, b, 9999, "shop.slice/frontend.service"),
		     DMSC_TV_NOT_A_BACKEND);
	cr_expect_eq(dmsc_tunnel_authorize(&p, inet_addr("198.18.13.3"), 8080,
					   "shop.slice/frontend.service"),
		     DMSC_TV_NOT_A_BACKEND);
	dmsc_policy_free(&p);
}

Test(tunnel_authz, the_view_dmscd_hands_the_tunnel_keeps_what_it_checks)
{
	static const char doc[] =
	    "{\"services\":["
	    "{\"name\":\"web\",\"vip\":\"198.19.13.1\",\"port\":80,\"protocol\":\"http\","
	    " \"backends\":[{\"address\":\"198.18.13.2\",\"port\":8080,\"weight\":3}],"
	    " \"allow_from\":[\"shop.slice/frontend.service\"],"
	    " \"routes\":[{\"match\":{\"path_prefix\":\"/a\"}}]},"
	    "{\"name\":\"dns\",\"vip\":\"198.19.13.2\",\"port\":53,\"protocol\":\"udp\","
	    " \"backends\":[{\"address\":\"198.18.13.3\",\"port\":53}]}]}";
	struct dmsc_policy p = {0}, q = {0};
	char *view = view_round_trip(doc, dmsc_mtls_view_json, &p, &q);

	cr_assert_eq(q.n_services, 2, "every service, not only http: %s", view);
	cr_expect_eq(q.services[0].protocol, DMSC_POLICY_HTTP);
	cr_expect_eq(q.services[1].protocol, DMSC_POLICY_UDP);
	cr_assert(q.services[0].has_allow_from);
	cr_expect_str_eq(q.services[0].allow_from[0], "shop.slice/frontend.service");
	cr_expect_not(q.services[1].has_allow_from, "absent stays absent (everyone)");
	cr_expect_eq(q.services[0].n_routes, 0, "no L7 fields: %s", view);
	cr_expect_eq(dmsc_tunnel_authorize(&q, inet_addr("198.18.13.2"), 8080,
					   "shop.slice/frontend.service"),
		     DMSC_TV_ALLOWED);
	free(view);
	dmsc_policy_free(&p);
	dmsc_policy_free(&q);
}
