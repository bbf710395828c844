#include "agent/base/abi.h"

#include <cstring>
#include <tuple>

bool operator<(const smik_policy_key& a, const smik_policy_key& b) {
  return std::tie(a.src_id, a.dst_id, a.dport, a.proto) <
         std::tie(b.src_id, b.dst_id, b.dport, b.proto);
}
bool operator==(const smik_policy_key& a, const smik_policy_key& b) {
  return std::tie(a.src_id, a.dst_id, a.dport, a.proto) ==
         std::tie(b.src_id, b.dst_id, b.dport, b.proto);
}
bool operator<(const smik_svc_key& a, const smik_svc_key& b) {
  return std::memcmp(&a, &b, sizeof a) < 0;
}
bool operator==(const smik_svc_key& a, const smik_svc_key& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}
bool operator==(const smik_policy_value& a, const smik_policy_value& b) {
  return a.rule_id == b.rule_id && a.flags == b.flags;
}
bool operator==(const smik_ip_info& a, const smik_ip_info& b) {
  return a.identity == b.identity && a.flags == b.flags;
}
