/* ibex Orthanc plugin: a thin C shim over OrthancCPlugin.h, whose every SDK call is a static
 * inline wrapper that Rust cannot call directly. No logic here: one function per SDK call
 * used, plus accessors of the request struct.
 *
 * Copyright the ibex authors. GPL-3.0-or-later (see ../LICENSE). */

#include <orthanc/OrthancCPlugin.h>

static OrthancPluginContext *ctx = NULL;

void ibexo_set_context(OrthancPluginContext *c) { ctx = c; }

/* 1 when the running Orthanc is at least major.minor.revision. */
int32_t ibexo_check_version(int32_t major, int32_t minor, int32_t revision) {
  return OrthancPluginCheckVersionAdvanced(ctx, major, minor, revision);
}

const char *ibexo_orthanc_version(void) { return ctx->orthancVersion; }

void ibexo_log(int32_t level, const char *message) {
  if (level == 0) {
    OrthancPluginLogError(ctx, message);
  } else if (level == 1) {
    OrthancPluginLogWarning(ctx, message);
  } else {
    OrthancPluginLogInfo(ctx, message);
  }
}

char *ibexo_get_configuration(void) { return OrthancPluginGetConfiguration(ctx); }

void ibexo_free_string(char *s) { OrthancPluginFreeString(ctx, s); }

void ibexo_register_no_lock(const char *regex, OrthancPluginRestCallback callback) {
  OrthancPluginRegisterRestCallbackNoLock(ctx, regex, callback);
}

int32_t ibexo_request_method(const OrthancPluginHttpRequest *r) { return (int32_t)r->method; }
uint32_t ibexo_request_groups_count(const OrthancPluginHttpRequest *r) { return r->groupsCount; }
const char *ibexo_request_group(const OrthancPluginHttpRequest *r, uint32_t i) { return r->groups[i]; }
uint32_t ibexo_request_get_count(const OrthancPluginHttpRequest *r) { return r->getCount; }
const char *ibexo_request_get_key(const OrthancPluginHttpRequest *r, uint32_t i) { return r->getKeys[i]; }
const char *ibexo_request_get_value(const OrthancPluginHttpRequest *r, uint32_t i) { return r->getValues[i]; }
const void *ibexo_request_body(const OrthancPluginHttpRequest *r) { return r->body; }
uint32_t ibexo_request_body_size(const OrthancPluginHttpRequest *r) { return r->bodySize; }

void ibexo_answer(OrthancPluginRestOutput *output, const void *data, uint32_t size, const char *mime) {
  OrthancPluginAnswerBuffer(ctx, output, (const char *)data, size, mime);
}

void ibexo_set_header(OrthancPluginRestOutput *output, const char *key, const char *value) {
  OrthancPluginSetHttpHeader(ctx, output, key, value);
}

void ibexo_send_status(OrthancPluginRestOutput *output, uint16_t status, const char *body, uint32_t size) {
  OrthancPluginSendHttpStatus(ctx, output, status, body, size);
}

void ibexo_send_method_not_allowed(OrthancPluginRestOutput *output, const char *allowed) {
  OrthancPluginSendMethodNotAllowed(ctx, output, allowed);
}

int32_t ibexo_get_dicom(const char *instance_id, OrthancPluginMemoryBuffer *out) {
  return (int32_t)OrthancPluginGetDicomForInstance(ctx, out, instance_id);
}

int32_t ibexo_rest_post(const char *uri, const void *body, uint32_t size, OrthancPluginMemoryBuffer *out) {
  return (int32_t)OrthancPluginRestApiPost(ctx, out, uri, (const char *)body, size);
}

void ibexo_free_buffer(OrthancPluginMemoryBuffer *buffer) { OrthancPluginFreeMemoryBuffer(ctx, buffer); }
