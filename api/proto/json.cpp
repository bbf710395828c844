#include "api/proto/json.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/util/json_util.h>

#include <nlohmann/json.hpp>

namespace smik::api {

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

void tidyMessage(nlohmann::json& j, const Descriptor* d);

void unquoteValue(nlohmann::json& v, const FieldDescriptor* f) {
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT64:
      if (v.is_string()) v = std::stoll(v.get<std::string>());
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      if (v.is_string()) v = std::stoull(v.get<std::string>());
      break;
    case FieldDescriptor::CPPTYPE_MESSAGE:
      tidyMessage(v, f->message_type());
      break;
    default:
      break;
  }
}

// protobuf prints 64-bit integers as strings (JavaScript's numbers are
// doubles); /status has always had numbers, and its counters stay far below
// 2^53. protobuf 26 and later do this themselves
// (JsonPrintOptions::unquote_int64_if_possible); the 3.21 of Debian 12
// cannot, so the descriptor says which strings were integers. Deprecated
// fields are kept for older gRPC clients; no JSON reader ever had them.
void tidyMessage(nlohmann::json& j, const Descriptor* d) {
  if (!j.is_object()) return;  // a well-known type printed as a scalar
  for (int i = 0; i < d->field_count(); i++) {
    const FieldDescriptor* f = d->field(i);
    auto it = j.find(f->json_name());
    if (it == j.end()) continue;
    if (f->options().deprecated()) {
      j.erase(it);
      continue;
    }
    if (f->is_map()) {
      const FieldDescriptor* value = f->message_type()->map_value();
      for (auto& [key, v] : it->items()) unquoteValue(v, value);
    } else if (f->is_repeated()) {
      for (auto& v : *it) unquoteValue(v, f);
    } else {
      unquoteValue(*it, f);
    }
  }
}

}  // namespace

std::string toJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;  // proto3 `optional` fields still only when set
  std::string out;
  auto st = google::protobuf::util::MessageToJsonString(m, &out, opts);
  if (!st.ok()) return "{\"error\": " + nlohmann::json(std::string(st.message())).dump() + "}\n";
  nlohmann::json j = nlohmann::json::parse(out);
  tidyMessage(j, m.GetDescriptor());
  return j.dump(2) + "\n";
}

bool fromJson(const std::string& json, google::protobuf::Message* m, std::string* err) {
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  auto st = google::protobuf::util::JsonStringToMessage(json, m, opts);
  if (st.ok()) return true;
  *err = std::string(st.message());
  return false;
}

}  // namespace smik::api
