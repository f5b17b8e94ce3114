/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The reason phrases (RFC 9110 15) of the statuses dmsc answers with
 * itself: dmscd's metrics server and dmsc-l7's own responses.
 */
#ifndef DMSC_HTTP_REASON_H
#define DMSC_HTTP_REASON_H

/* status's reason phrase; "Error" for a status dmsc never sends */
const char *dmsc_http_reason(int status);

#endif /* DMSC_HTTP_REASON_H */
