// The JSON of smik's API messages: protobuf's JSON mapping (lowerCamelCase
// keys), with every field printed (a deny is "allowed": false, not nothing)
// but deprecated ones, and 64-bit integers as numbers. /status, `smik status -o json` and
// `smik explain -o json` are this JSON of StatusReply and ExplainReply.
#pragma once

#include <google/protobuf/message.h>

#include <string>

namespace smik::api {

// Indented, one trailing newline.
std::string toJson(const google::protobuf::Message& m);

// The reverse, for a reply read as JSON (`smik status --http`); unknown
// keys are skipped. False with *err on malformed input.
bool fromJson(const std::string& json, google::protobuf::Message* m, std::string* err);

}  // namespace smik::api
