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
	static const uint8_t a6[16] = {0x20, 0x01, 0, 2, [15] = 2};
	uint8_t p[DMSC_TF_OPEN_MAX + 1];
	char id[DMSC_TF_ID_MAX + 2];
	struct dmsc_tf_open o;
	struct dmsc_tf_hdr h;
	size_t n;

	n = dmsc_tf_open_encode(p, htonl(0xc6120d02), htons(8080), "shop.slice/frontend.service");
	cr_assert_eq(n, 6 + strlen("shop.slice/frontend.service"));
	cr_assert(dmsc_tf_open_decode(p, n, 0, &o));
	cr_expect_not(o.ipv6);
	cr_expect_eq(o.dest_addr, htonl(0xc6120d02));
	cr_expect_eq(o.dest_port, htons(8080));
	cr_expect_str_eq(o.identity, "shop.slice/frontend.service");
	cr_expect_eq(dmsc_tf_open_encode(p, 1, 1, ""), 0, "an empty identity");
	memset(id, 'x', sizeof(id) - 1);
	id[sizeof(id) - 1] = '\0';
	cr_expect_eq(dmsc_tf_open_encode(p, 1, 1, id), 0, "an identity over the maximum");
	cr_expect_not(dmsc_tf_open_decode(p, 6, 0, &o), "no identity");
	n = dmsc_tf_open_encode(p, 1, 1, "a/b");
	p[7] = '\0';
	cr_expect_not(dmsc_tf_open_decode(p, n, 0, &o), "a NUL inside the identity");
	/* IPv6: the frame's flag says 16 bytes of address */
	n = dmsc_tf_open_encode6(p, a6, htons(8080), "a/b");
	cr_assert_eq(n, 18 + 3);
	cr_assert(dmsc_tf_open_decode(p, n, DMSC_TF_OPEN_F_IPV6, &o));
	cr_expect(o.ipv6);
	cr_expect(!memcmp(o.dest_addr6, a6, 16));
	cr_expect_eq(o.dest_port, htons(8080));
	cr_expect_str_eq(o.identity, "a/b");
	cr_expect_not(dmsc_tf_open_decode(p, 18, DMSC_TF_OPEN_F_IPV6, &o), "no identity");
	memset(id, 'x', DMSC_TF_ID_MAX);
	id[DMSC_TF_ID_MAX] = '\0';
	cr_expect_eq(dmsc_tf_open_encode6(p, a6, 1, id), DMSC_TF_OPEN_MAX, "the largest OPEN");
	dmsc_tf_put_hdr(p, DMSC_TF_OPEN, 10, 1);
	p[1] = DMSC_TF_OPEN_F_IPV6;
	cr_expect(dmsc_tf_get_hdr(p, &h), "OPEN's IPv6 flag");
	dmsc_tf_put_hdr(p, DMSC_TF_DATA, 10, 1);
	p[1] = DMSC_TF_OPEN_F_IPV6;
	cr_expect_not(dmsc_tf_get_hdr(p, &h), "the flag on another frame");
}

Test(tunnel_frame, forward_option)
{
	struct dmsc_tunnel_forward f;
	char why[256];

	cr_assert_eq(dmsc_tunnel_forward_parse("127.0.0.1:18080=198.18.13.2:15008,198.18.13.2:8080,"
					       "shop.slice/web",
					       &f, why, sizeof(why)),
		     0, "%s", why);
	cr_expect_eq(ntohs(f.listen.v4.sin_port), 18080);
	cr_expect_eq(f.peer.v4.sin_addr.s_addr, inet_addr("198.18.13.2"));
	cr_expect_eq(ntohs(f.dest.v4.sin_port), 8080);
	cr_expect_str_eq(f.identity, "shop.slice/web");
	/* IPv6 peers and destinations, bracketed (docs/design.md decision 64) */
	cr_assert_eq(dmsc_tunnel_forward_parse("[::1]:18080=[2001:2::d:2]:15008,[2001:2::d:2]:8080,"
					       "shop.slice/web",
					       &f, why, sizeof(why)),
		     0, "%s", why);
	cr_expect_eq(f.listen.sa.sa_family, AF_INET6);
	cr_expect_eq(f.peer.sa.sa_family, AF_INET6);
	cr_expect_eq(f.dest.v6.sin6_addr.s6_addr[15], 2);
	cr_expect_eq(ntohs(f.dest.v6.sin6_port), 8080);
	cr_expect_eq(dmsc_tunnel_forward_parse("127.0.0.1:1=2001:2::d:2:15008,1.2.3.4:6,x", &f, why,
					       sizeof(why)),
		     -EINVAL, "an IPv6 address without brackets");
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
	/* dmscd's probes reach every backend, past allow_from (decision 77);
	 * a cgroup path that looks like one, without the leading '/', does
	 * not; nor does a probe reach what is no backend */
	cr_expect_eq(dmsc_tunnel_authorize(&p, b, 8080, DMSC_TF_ID_PROBE_TCP), DMSC_TV_ALLOWED);
	cr_expect_eq(dmsc_tunnel_authorize(&p, b, 8081, DMSC_TF_ID_PROBE_HTTP), DMSC_TV_ALLOWED);
	cr_expect_eq(dmsc_tunnel_authorize(&p, b, 8080, "dmsc-health/tcp"), DMSC_TV_DENIED);
	cr_expect_eq(dmsc_tunnel_authorize(&p, b, 9999, DMSC_TF_ID_PROBE_TCP),
		     DMSC_TV_NOT_A_BACKEND);
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

Test(tunnel_frame, alpn_offered)
{
	static const uint8_t ours_last[] = "\x00\x11\x02h2\x0d"
					   "dmsc-tunnel/1";
	static const uint8_t other[] = "\x00\x0c\x02h2\x08http/1.1";
	static const uint8_t v2[] = "\x00\x0e\x0d"
				    "dmsc-tunnel/2";
	static const uint8_t short_entry[] = "\x00\x03\x05h2";
	static const uint8_t bad_list_len[] = "\x00\x09\x02h2";
	char got[64];

	cr_expect(dmsc_tf_alpn_offered(ours_last, sizeof(ours_last) - 1, got, sizeof(got)));
	cr_expect_str_eq(got, "h2, dmsc-tunnel/1");
	cr_expect_not(dmsc_tf_alpn_offered(other, sizeof(other) - 1, got, sizeof(got)));
	cr_expect_str_eq(got, "h2, http/1.1");
	cr_expect_not(dmsc_tf_alpn_offered(v2, sizeof(v2) - 1, got, sizeof(got)),
		      "another version of the framing");
	cr_expect_not(dmsc_tf_alpn_offered(short_entry, sizeof(short_entry) - 1, got, sizeof(got)),
		      "an id longer than the list");
	cr_expect_not(
	    dmsc_tf_alpn_offered(bad_list_len, sizeof(bad_list_len) - 1, got, sizeof(got)),
	    "a list length that is not the extension's");
	cr_expect_not(dmsc_tf_alpn_offered(ours_last, 1, got, sizeof(got)), "one byte");
	/* the log's copy is cut, never overrun */
	cr_expect(dmsc_tf_alpn_offered(ours_last, sizeof(ours_last) - 1, got, 6));
	cr_expect_str_eq(got, "h2, d");
}

/* readv's filling of n bytes into the iovecs, in order, from src */
static void fill_iov(const struct iovec *iov, size_t niov, const uint8_t *src, size_t n)
{
	size_t k, m;

	for (k = 0; k < niov && n; k++, src += m, n -= m) {
		m = n < iov[k].iov_len ? n : iov[k].iov_len;
		memcpy(iov[k].iov_base, src, m);
	}
}

/* DATA frames read in place: what readv filled, sealed, parses back as
 * frames of the stream whose payloads are the bytes read, in order */
Test(tunnel_frame, data_read_in_place)
{
	const size_t wants[] = {1, 100, DMSC_TF_PAYLOAD_MAX, DMSC_TF_PAYLOAD_MAX + 1,
				16 * DMSC_TF_PAYLOAD_MAX, 5 * DMSC_TF_PAYLOAD_MAX - 3};
	const size_t max = 16, want_max = 16 * DMSC_TF_PAYLOAD_MAX;
	uint8_t *src = malloc(want_max), *buf = malloc(dmsc_tf_data_room(want_max)),
		*back = malloc(want_max);
	struct iovec iov[16];
	size_t w, i;

	cr_assert(src && buf && back);
	for (i = 0; i < want_max; i++)
		src[i] = (uint8_t)(i * 7 + i / 251);
	cr_expect_eq(dmsc_tf_data_room(DMSC_TF_PAYLOAD_MAX + 1),
		     DMSC_TF_PAYLOAD_MAX + 1 + 2 * DMSC_TF_HDR);
	for (w = 0; w < sizeof(wants) / sizeof(wants[0]); w++) {
		size_t want = wants[w], niov = dmsc_tf_data_iov(buf, want, iov, max), total = 0;
		/* readv short of what was asked: every count from 1 up is
		 * possible; try the whole, one less and a frame and a bit */
		size_t ns[] = {want, want - 1, DMSC_TF_PAYLOAD_MAX + 5}, j;

		cr_expect_eq(niov, (want + DMSC_TF_PAYLOAD_MAX - 1) / DMSC_TF_PAYLOAD_MAX,
			     "want %zu", want);
		for (i = 0; i < niov; i++)
			total += iov[i].iov_len;
		cr_expect_eq(total, want, "want %zu", want);
		for (j = 0; j < 3; j++) {
			size_t n = ns[j], used, off = 0, got = 0;

			if (n == 0 || n > want)
				continue;
			memset(buf, 0xee, dmsc_tf_data_room(want));
			fill_iov(iov, niov, src, n);
			used = dmsc_tf_data_seal(buf, n, 0x0102);
			cr_expect_eq(used,
				     n + (n + DMSC_TF_PAYLOAD_MAX - 1) / DMSC_TF_PAYLOAD_MAX *
					     DMSC_TF_HDR,
				     "want %zu, read %zu", want, n);
			while (off < used) {
				struct dmsc_tf_hdr h;

				cr_assert(dmsc_tf_get_hdr(buf + off, &h), "want %zu, read %zu, at %zu",
					  want, n, off);
				cr_expect_eq(h.type, DMSC_TF_DATA);
				cr_expect_eq(h.stream, 0x0102u);
				cr_assert_leq(off + DMSC_TF_HDR + h.len, used);
				memcpy(back + got, buf + off + DMSC_TF_HDR, h.len);
				got += h.len;
				off += DMSC_TF_HDR + h.len;
			}
			cr_expect_eq(got, n, "want %zu, read %zu", want, n);
			cr_expect(!memcmp(back, src, n), "want %zu, read %zu: bytes differ", want,
				  n);
		}
	}
	cr_expect_eq(dmsc_tf_data_iov(buf, want_max + 1, iov, max), max, "at most max iovecs");
	free(src);
	free(buf);
	free(back);
}

