// `upper` in C: replies every message upper-cased (ASCII), prefixed by the `prefix` setting if
// it is given (`--config upper-c.prefix=">> "`), and logs a debug line per message.
//
// `handler.h` and `handler.c` are generated from wit/handler.wit by `wit-bindgen c` (build.sh
// does it); this file implements the three exported hooks they declare.
//
// Ownership, as wit-bindgen's C bindings define it:
// - the hooks' arguments (`conn`, `message`) are the hook's: free them, or hand them on;
// - a reply or an error string is handed to the bindings, which `free()` it after the host has
//   copied it out, so it must come from `malloc` (or be empty);
// - a string returned by an import (`handler_config_get`) is the caller's to free.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handler.h"

// A reply that sends nothing and keeps the connection open.
static void no_reply(handler_response_t *ret) {
  ret->reply.is_some = false;
  ret->close = false;
}

// No greeting: the client speaks first.
bool exports_handler_on_connect(handler_connection_t *conn, handler_response_t *ret,
                                handler_string_t *err) {
  (void)err;
  handler_connection_free(conn);
  no_reply(ret);
  return true;
}

bool exports_handler_on_message(handler_connection_t *conn, handler_list_u8_t *message,
                                handler_response_t *ret, handler_string_t *err) {
  // Settings are read on every call: an instance may be fresh for each message.
  handler_string_t key, prefix;
  handler_string_set(&key, "prefix");
  if (!handler_config_get(&key, &prefix)) {
    // Not given. (`prefix` is then left undefined, not emptied: reset it.)
    prefix.ptr = NULL;
    prefix.len = 0;
  }

  // Upper-case the message in place, then either hand its buffer over as the reply as it is
  // (no prefix) or copy it behind the prefix.
  for (size_t i = 0; i < message->len; i++) {
    uint8_t c = message->ptr[i];
    if (c >= 'a' && c <= 'z') message->ptr[i] = c - ('a' - 'A');
  }
  size_t count = message->len;
  handler_list_u8_t reply = *message;
  if (prefix.len > 0) {
    reply.len = prefix.len + message->len;
    reply.ptr = malloc(reply.len);
    if (reply.ptr == NULL) {
      handler_string_free(&prefix);
      handler_list_u8_free(message);
      handler_connection_free(conn);
      handler_string_dup(err, "upper: out of memory");
      return false;
    }
    memcpy(reply.ptr, prefix.ptr, prefix.len);
    memcpy(reply.ptr + prefix.len, message->ptr, message->len);
    handler_list_u8_free(message);
  }
  handler_string_free(&prefix);

  // Debug lines only show when the host runs with e.g. `RUST_LOG=debug`.
  char line[64];
  snprintf(line, sizeof line, "conn %llu: upper-cased %zu bytes", (unsigned long long)conn->id,
           count);
  handler_string_t text;
  handler_string_set(&text, line);
  handler_log(SANDPORT_PLUGIN_TYPES_LEVEL_DEBUG, &text);

  handler_connection_free(conn);
  ret->reply.is_some = true;
  ret->reply.val = reply;  // freed by the bindings after the call (when its length is not 0)
  ret->close = false;
  return true;
}

// Nothing to clean up.
void exports_handler_on_disconnect(handler_connection_t *conn) { handler_connection_free(conn); }
