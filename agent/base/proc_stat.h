// What the kernel reports of a process in /proc/PID/stat.
#pragma once

#include <string>

namespace smik {

// CPU time (user + system) the process has used, in seconds; "self" for
// this one. 0 when it cannot be read.
double processCpuSeconds(const std::string& pid = "self");

}  // namespace smik
