/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The framing of the tunnel between two hosts' helpers, inside one mutual
 * TLS 1.3 connection (docs/design.md decision 23, docs/mtls.md#the-tunnel).
 * Pure encoding and decoding, shared by the tunnel and its unit tests.
 *
 * Every frame is an 8-byte header and a payload:
 *   type (1) | flags (1, 0) | length (2, network order) | stream (4, network order)
 * Streams are opened by the connecting side only (odd ids, from 1) and
 * never reused on one connection.
 */
#ifndef DMSC_TUNNEL_FRAME_H
#define DMSC_TUNNEL_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#define DMSC_TF_HDR 8
/* The ALPN protocol id both ends of a tunnel connection require
 * (docs/design.md decision 64): this framing, version 1. A change of the
 * framing that an older helper cannot read gets a new id. */
#define DMSC_TF_ALPN "dmsc-tunnel/1"
/* ... as ALPN's wire list: one length byte, the id */
#define DMSC_TF_ALPN_WIRE "\x0d" DMSC_TF_ALPN
/* One TLS record holds 16 KiB of plaintext: a frame fits in one. */
#define DMSC_TF_PAYLOAD_MAX (16384 - DMSC_TF_HDR)
/* The identity the source host vouches for: a cgroup path as allow_from
 * names it (at most PATH_MAX in the kernel; 1024 is plenty for a mesh). */
#define DMSC_TF_ID_MAX 1024
/* The identities of dmscd's health probes (DMSC_CGROUP_ID_PROBE_*): the
 * destination lets them reach any backend of its policy, past allow_from,
 * and the source ends a tcp probe's stream once it is open
 * (docs/design.md decision 77). A cgroup path never begins with '/'. */
#define DMSC_TF_ID_PROBE_TCP "/dmsc-health/tcp"
#define DMSC_TF_ID_PROBE_HTTP "/dmsc-health/http"
static inline bool dmsc_tf_id_probe(const char *identity)
{
	return !strcmp(identity, DMSC_TF_ID_PROBE_TCP) || !strcmp(identity, DMSC_TF_ID_PROBE_HTTP);
}

enum dmsc_tf_type {
	/* source -> destination: open a stream to dest, for identity (flags:
	 * DMSC_TF_OPEN_F_IPV6 or none) */
	DMSC_TF_OPEN = 1,
	/* destination -> source: the destination's connection is up */
	DMSC_TF_OPEN_OK = 2,
	DMSC_TF_DATA = 3,
	/* credit: the sender may send u32 more DATA bytes on the stream */
	DMSC_TF_WINDOW = 4,
	/* no more DATA from the sender on this stream (a half close) */
	DMSC_TF_FIN = 5,
	/* the stream is gone: u8 reason, then text */
	DMSC_TF_RESET = 6,
	/* stream 0: open no more streams on this connection (the sender is
	 * going away; its streams finish) */
	DMSC_TF_GOAWAY = 7,
};

/* OPEN's one flag: its destination is an IPv6 address (16 bytes, not 4;
 * docs/design.md decision 64). */
#define DMSC_TF_OPEN_F_IPV6 0x01

/* Why a stream was reset; the text after it says more. */
enum dmsc_tf_reset {
	DMSC_TF_R_ERROR = 1,	/* a socket error on one side */
	DMSC_TF_R_CONNECT = 2,	/* the destination could not connect */
	DMSC_TF_R_DENIED = 3,	/* the destination refused the identity or address */
	DMSC_TF_R_PROTOCOL = 4, /* a malformed frame */
	DMSC_TF_R_SHUTDOWN = 5, /* the helper is going away */
};

struct dmsc_tf_hdr {
	uint8_t type;
	uint8_t flags;
	uint16_t len;
	uint32_t stream;
};

/* What OPEN carries. Addresses in network order. */
struct dmsc_tf_open {
	bool ipv6;		  /* dest_addr6, not dest_addr */
	uint32_t dest_addr;
	uint8_t dest_addr6[16];
	uint16_t dest_port;
	uint16_t id_len;
	char identity[DMSC_TF_ID_MAX + 1];
};

static inline void dmsc_tf_put_hdr(uint8_t *p, uint8_t type, uint16_t len, uint32_t stream)
{
	p[0] = type;
	p[1] = 0;
	p[2] = (uint8_t)(len >> 8);
	p[3] = (uint8_t)len;
	p[4] = (uint8_t)(stream >> 24);
	p[5] = (uint8_t)(stream >> 16);
	p[6] = (uint8_t)(stream >> 8);
	p[7] = (uint8_t)stream;
}

/* Returns false when the header is not a frame this version knows. */
static inline bool dmsc_tf_get_hdr(const uint8_t *p, struct dmsc_tf_hdr *h)
{
	h->type = p[0];
	h->flags = p[1];
	h->len = (uint16_t)(p[2] << 8 | p[3]);
	h->stream = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
	if (h->type == DMSC_TF_GOAWAY)
		return h->flags == 0 && h->len == 0 && h->stream == 0;
	return h->type >= DMSC_TF_OPEN && h->type <= DMSC_TF_RESET &&
	       (h->flags == 0 || (h->type == DMSC_TF_OPEN && h->flags == DMSC_TF_OPEN_F_IPV6)) &&
	       h->len <= DMSC_TF_PAYLOAD_MAX && h->stream != 0;
}

/* Flow control, per stream and direction: the sender may send
 * DMSC_TF_WINDOW_INITIAL bytes of DATA before any WINDOW credit (both
 * sides assume it: a protocol constant), then what WINDOW frames add; the
 * receiver returns credit as it writes to its local socket, and may
 * return more than it was given back: it grows a window while its reader
 * keeps up (docs/design.md decision 69). */
#define DMSC_TF_WINDOW_INITIAL (256u << 10)

/* DATA frames read in place (docs/design.md decision 65): the iovecs for
 * one readv() of up to want payload bytes into base, each a frame's
 * payload with DMSC_TF_HDR bytes left before it; base needs
 * dmsc_tf_data_room(want) bytes. Returns how many iovecs (at most max). */
static inline size_t dmsc_tf_data_room(size_t want)
{
	return want + (want + DMSC_TF_PAYLOAD_MAX - 1) / DMSC_TF_PAYLOAD_MAX * DMSC_TF_HDR;
}
size_t dmsc_tf_data_iov(uint8_t *base, size_t want, struct iovec *iov, size_t max);
/* Once readv returned n (> 0): the headers of the frames it filled, for
 * stream. Returns the bytes of those frames from base (n and their
 * headers). */
size_t dmsc_tf_data_seal(uint8_t *base, size_t n, uint32_t stream);

/* OPEN's payload: dest_addr (4) dest_port (2) identity (the rest, no NUL).
 * Returns its length, or 0 when identity is empty or too long. */
size_t dmsc_tf_open_encode(uint8_t *p, uint32_t dest_addr, uint16_t dest_port,
			   const char *identity);
/* With DMSC_TF_OPEN_F_IPV6: dest_addr6 (16) dest_port (2) identity. */
size_t dmsc_tf_open_encode6(uint8_t *p, const uint8_t dest_addr6[16], uint16_t dest_port,
			    const char *identity);
/* The largest OPEN payload */
#define DMSC_TF_OPEN_MAX (18 + DMSC_TF_ID_MAX)
/* flags: the frame's (DMSC_TF_OPEN_F_IPV6 or 0). false: malformed (short,
 * empty or over-long identity, a NUL in it). */
bool dmsc_tf_open_decode(const uint8_t *p, size_t len, uint8_t flags, struct dmsc_tf_open *o);

/* Whether a ClientHello's ALPN extension (ext: its body, the 2-byte list
 * length then each id with its length byte) offers DMSC_TF_ALPN. Writes
 * the ids offered into offered ("h2, http/1.1"; bytes outside printable
 * ASCII as '?'; "" when none) for the log. A malformed list offers none. */
bool dmsc_tf_alpn_offered(const uint8_t *ext, size_t len, char *offered, size_t offered_len);

#endif /* DMSC_TUNNEL_FRAME_H */
