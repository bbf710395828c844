// The kernel ABI (bpf/include/smik_abi.h) with the comparisons userspace
// needs to keep its structs in ordered maps and diff them (policy keys by
// field; service keys bytewise: smik_abi.h asserts they have no padding).
#pragma once

#include "bpf/include/smik_abi.h"

bool operator<(const smik_policy_key& a, const smik_policy_key& b);
bool operator<(const smik_svc_key& a, const smik_svc_key& b);
bool operator==(const smik_svc_key& a, const smik_svc_key& b);
bool operator==(const smik_policy_key& a, const smik_policy_key& b);
bool operator==(const smik_policy_value& a, const smik_policy_value& b);
bool operator==(const smik_ip_info& a, const smik_ip_info& b);
