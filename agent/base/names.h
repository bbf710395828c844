// Names every layer prints the same way: protocols and namespaced objects.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace smik {

// The L4 protocols SMI routes name; the values are the kernel's.
enum class Proto : uint8_t { kTcp = 6, kUdp = 17 };
const char* protoName(Proto p);  // "TCP", "UDP"
// A kernel protocol number as smik prints it: "TCP", "UDP", else the number.
std::string kernelProtoName(uint8_t proto);

// "ns/name": how plans, status and explanations key a namespaced object.
std::string namespacedName(const std::string& ns, const std::string& name);

// The default of --cluster-domain, as kubelet's --cluster-domain.
inline constexpr const char* kDefaultClusterDomain = "cluster.local";

// A Service as a manifest may name it, the ways a pod's DNS resolves it:
// NAME, NAME.NS, NAME.NS.svc or NAME.NS.svc.DOMAIN (a trailing dot allowed).
// Manifests written for other meshes use every form: the SMI spec calls a
// TrafficSplit's service "the FQDN that applications use".
struct ServiceName {
  std::string name;
  std::string ns;      // empty: not written (the referring object's namespace)
  std::string domain;  // empty: not written; else lower case, as written
};
// False, with *why, for text that is none of those forms ("a.b.c": the third
// label is not "svc"; empty labels).
bool splitServiceName(std::string_view written, ServiceName* out, std::string* why);
// Whether a written domain is this cluster's: the domain itself, or its
// leading labels ("cluster" for "cluster.local", which OSM's documentation
// lists as accepted). Case-insensitive, as DNS.
bool isClusterDomain(std::string_view written, std::string_view cluster_domain);

}  // namespace smik
