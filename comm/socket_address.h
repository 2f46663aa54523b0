// The local end of a connected socket, as other hosts would address this one.
#pragma once

#include <string>

namespace pf {

/// The IPv4 address the connection on `fd` leaves this host from; pf::Error
/// naming `peer` (the other end, for the message) when it cannot be told.
std::string local_address(int fd, const std::string& peer);

}  // namespace pf
