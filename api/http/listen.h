// cpp-httplib (Debian's build) listens with a backlog of 5; a burst of
// connections beyond it (kubelet probes, a Prometheus scrape and the
// aggregator at once) loses SYNs and costs each a 1 s retransmit. Linux
// takes a second listen() on the same socket as a new backlog.
#pragma once

#include <httplib.h>
#include <sys/socket.h>

namespace smik::api {

// Call before bind_to_port(); then listenWide(*fd) after it.
inline void rememberListenSocket(httplib::Server& server, int* fd) {
  server.set_socket_options([fd](socket_t s) {
    httplib::default_socket_options(s);
    *fd = s;
  });
}

inline void listenWide(int fd) {
  if (fd >= 0) ::listen(fd, 1024);
}

}  // namespace smik::api
