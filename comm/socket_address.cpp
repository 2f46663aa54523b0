// The local end of a connected socket.
#include "comm/socket_address.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "ir/diagnostic.h"

namespace pf {

std::string local_address(int fd, const std::string& peer) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  char text[INET_ADDRSTRLEN] = {};
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      !::inet_ntop(AF_INET, &addr.sin_addr, text, sizeof text))
    throw Error(fmt::format("cannot tell this host's address on the connection to {}", peer));
  return text;
}

}  // namespace pf
