#ifndef INSIGHT_COPENSSL_SHIM_H
#define INSIGHT_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/bio.h>
#endif
