// Human-readable numbers: counts with separators, bytes, FLOPs, and parsing
// of sizes such as `2GiB` given on the command line.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace pf {

std::string format_count(int64_t n);      // 124439808 -> "124,439,808"
std::string format_bytes(double bytes);   // 497759232 -> "474.7 MiB"
std::string format_flops(double flops);   // 2.9e11 -> "291.3 GFLOP"
std::string format_seconds(double s);     // 78.6021 -> "78.602 s", 0.0021 -> "2.100 ms"
/// "2GiB", "512MiB", "1.5GB", "4096" (bytes); throws Error on anything else.
int64_t parse_bytes(std::string_view text);

}  // namespace pf
