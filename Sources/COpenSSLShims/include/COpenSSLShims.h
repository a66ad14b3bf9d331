#ifndef INSIGHT_COPENSSL_SHIMS_H
#define INSIGHT_COPENSSL_SHIMS_H

/* Function wrappers for the OpenSSL macros Swift cannot import. */

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/tls1.h>
#include <openssl/x509v3.h>

static inline long insight_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}

static inline long insight_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_session_cache_mode(ctx, mode);
}

static inline long insight_SSL_CTX_sess_set_cache_size(SSL_CTX *ctx, long size) {
    return SSL_CTX_sess_set_cache_size(ctx, size);
}

static inline long insight_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}

/* Options the proxy always sets: no renegotiation, server cipher preference, no compression. */
static inline void insight_SSL_CTX_set_default_options(SSL_CTX *ctx) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
}

static inline long insight_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}

static inline long insight_BIO_set_mem_eof_return(BIO *bio, long value) {
    return BIO_set_mem_eof_return(bio, value);
}

static inline size_t insight_BIO_pending(BIO *bio) {
    return BIO_ctrl_pending(bio);
}

static inline void insight_BIO_set_retry_read(BIO *bio) { BIO_set_retry_read(bio); }
static inline void insight_BIO_clear_retry_flags(BIO *bio) { BIO_clear_retry_flags(bio); }

static inline int insight_SSL_set_app_data(SSL *ssl, void *data) {
    return SSL_set_app_data(ssl, data);
}

static inline void *insight_SSL_get_app_data(const SSL *ssl) {
    return SSL_get_app_data(ssl);
}

static inline int insight_ERR_GET_LIB(unsigned long e) { return ERR_GET_LIB(e); }
static inline int insight_ERR_GET_REASON(unsigned long e) { return ERR_GET_REASON(e); }

/* Constants that are macros built from other macros or casts. */
static const int insight_TLS1_2_VERSION = TLS1_2_VERSION;
static const int insight_TLS1_3_VERSION = TLS1_3_VERSION;
static const long insight_SSL_SESS_CACHE_SERVER = SSL_SESS_CACHE_SERVER;
static const int insight_TLSEXT_TYPE_alpn = TLSEXT_TYPE_application_layer_protocol_negotiation;
static const int insight_SSL_AD_NO_APPLICATION_PROTOCOL = SSL_AD_NO_APPLICATION_PROTOCOL;
static const int insight_SSL_AD_REASON_OFFSET = SSL_AD_REASON_OFFSET;
static const int insight_BIO_TYPE_SOURCE_SINK = BIO_TYPE_SOURCE_SINK;

#endif
