#include "maps/maps.h"

namespace smik::maps {

bool FakeBackend::countWrite(std::string* err) {
  if (fail_after_writes >= 0 && writes >= fail_after_writes) {
    fail_after_writes = -1;
    if (err) *err = "injected failure";
    return false;
  }
  writes++;
  return true;
}

Result<KernelState> FakeBackend::read() {
  if (fail_reads > 0) {
    fail_reads--;
    return fail("injected read failure");
  }
  return state_;
}

bool FakeBackend::putIp(const Addr& a, const smik_ip_info& v, std::string* err) {
  if (!countWrite(err)) return false;
  state_.ips[a] = v;
  return true;
}

bool FakeBackend::deleteIp(const Addr& a, std::string* err) {
  if (!countWrite(err)) return false;
  state_.ips.erase(a);
  return true;
}

bool FakeBackend::putEndpoint(uint32_t ifindex, const smik_endpoint& v, std::string* err) {
  if (!countWrite(err)) return false;
  state_.endpoints[ifindex] = v;
  return true;
}

bool FakeBackend::deleteEndpoint(uint32_t ifindex, std::string* err) {
  if (!countWrite(err)) return false;
  state_.endpoints.erase(ifindex);
  return true;
}

bool FakeBackend::swapPolicy(const PolicyEntries& entries, std::string* err) {
  if (!countWrite(err)) return false;
  state_.policy = entries;
  state_.policy_installed = true;
  generation_++;
  swaps++;
  return true;
}

bool FakeBackend::bumpGeneration(std::string* err) {
  if (!countWrite(err)) return false;
  generation_++;
  return true;
}

bool FakeBackend::applyServices(const std::map<smik_svc_key, SvcTable>& upserts,
                                const std::vector<smik_svc_key>& deletes, std::string* err) {
  if (!countWrite(err)) return false;
  for (const auto& [k, t] : upserts) state_.services[k] = t;
  for (const auto& k : deletes) state_.services.erase(k);
  return true;
}

}  // namespace smik::maps
