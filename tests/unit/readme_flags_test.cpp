// The README and `--help` name the same flags, both ways, for the agent and
// for every `smik` command: a flag added without documentation, or documented
// and gone, fails here. The README's two usage blocks are the documentation:
// "Running the agent" (every flag of smik-agent) and "CLI" (a line per
// command, plus "# CMD, CMD:" / "# every command [but CMD, ...]:" lines for
// shared flags).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

using Flags = std::set<std::string>;

std::string readme() {
  std::ifstream in(std::string(SMIK_SOURCE_DIR) + "/README.md");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The first ```sh block after the heading, line by line.
std::vector<std::string> blockAfter(const std::string& text, const std::string& heading) {
  std::vector<std::string> lines;
  size_t at = text.find("\n" + heading + "\n");
  if (at == std::string::npos) return lines;
  at = text.find("```sh\n", at);
  if (at == std::string::npos) return lines;
  std::istringstream in(text.substr(at + 6, text.find("\n```", at) - at - 6));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

Flags longFlags(const std::string& text) {
  static const std::regex kFlag("(^|[^-a-z0-9])(--[a-z][a-z0-9-]*)");
  Flags out;
  for (std::sregex_iterator it(text.begin(), text.end(), kFlag), end; it != end; ++it)
    out.insert((*it)[2].str());
  return out;
}

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  pclose(p);
  return out;
}

struct Help {
  Flags flags;                       // long names, --help aside
  std::vector<std::string> commands;  // subcommands it lists
};

// CLI11's help: option lines start "  -x,--name" or "  --name"; subcommands
// are listed under "Subcommands:" as "  name  description".
Help help(const std::string& cmd) {
  static const std::regex kOption(R"(^\s+(-[A-Za-z],)?(--[a-z][a-z0-9-]*))");
  static const std::regex kCommand(R"(^\s+([a-z][a-z0-9-]*)\s)");
  Help h;
  std::istringstream in(run(cmd + " --help"));
  bool in_commands = false;
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (line.empty() || !std::isspace(static_cast<unsigned char>(line[0])))
      in_commands = line.rfind("Subcommands:", 0) == 0 || line.rfind("SUBCOMMANDS:", 0) == 0;
    else if (in_commands && std::regex_search(line, m, kCommand))
      h.commands.push_back(m[1]);
    else if (std::regex_search(line, m, kOption) && m[2] != "--help")
      h.flags.insert(m[2]);
  }
  return h;
}

// "undocumented: --x; documented, not in --help: --y", or "" when they agree.
std::string disagreement(const Flags& documented, const Flags& actual) {
  std::string out;
  for (const auto& f : actual)
    if (!documented.count(f)) out += " undocumented " + f + ";";
  for (const auto& f : documented)
    if (!actual.count(f)) out += " documented, not in --help: " + f + ";";
  return out;
}

TEST(ReadmeFlags, AgentBlockListsEveryAgentFlag) {
  const auto block = blockAfter(readme(), "## Running the agent");
  ASSERT_FALSE(block.empty()) << "no ```sh block under \"## Running the agent\"";
  Flags documented;
  for (const auto& line : block) documented.merge(longFlags(line));
  const Flags actual = help(SMIK_AGENT_BIN).flags;
  ASSERT_TRUE(actual.count("--pin-dir")) << "cannot read smik-agent --help";
  EXPECT_EQ(disagreement(documented, actual), "") << "smik-agent";
}

// Every command without subcommands, by its path ("map dump"), with its flags.
std::map<std::string, Flags> cliCommands(const std::string& path = "") {
  std::map<std::string, Flags> out;
  const Help h = help(std::string(SMIK_CLI_BIN) + (path.empty() ? "" : " " + path));
  if (h.commands.empty() && !path.empty()) out[path] = h.flags;
  for (const auto& c : h.commands) out.merge(cliCommands(path.empty() ? c : path + " " + c));
  return out;
}

// The CLI block read as the test's comment at the top says.
std::map<std::string, Flags> documentedCli(const std::vector<std::string>& block,
                                           const std::map<std::string, Flags>& commands) {
  std::map<std::string, Flags> out;
  std::vector<std::string> group;  // the commands of a "# ...:" line and its "#   " lines
  for (const auto& line : block) {
    if (line.rfind("build/smik ", 0) == 0) {
      group.clear();
      const std::string code = line.substr(0, line.find("  #"));
      std::istringstream words(code.substr(11));
      std::string path, word, best;
      while (words >> word) {
        path += (path.empty() ? "" : " ") + word;
        if (commands.count(path)) best = path;
      }
      EXPECT_FALSE(best.empty()) << "no such command: " << line;
      out[best].merge(longFlags(code));
    } else if (line.rfind("#   ", 0) == 0 && !group.empty()) {
      for (const auto& c : group) out[c].merge(longFlags(line));
    } else if (line.rfind("# ", 0) == 0 && line.find(':') != std::string::npos) {
      const std::string who = line.substr(2, line.find(':') - 2);
      group.clear();
      if (who.rfind("every command", 0) == 0) {
        // "every command but a, map dump": commas part the exceptions.
        std::set<std::string> but;
        if (auto at = who.find(" but "); at != std::string::npos) {
          std::istringstream names(who.substr(at + 5));
          for (std::string c; std::getline(names, c, ',');) {
            c = std::regex_replace(c, std::regex("^ +| +$"), "");
            EXPECT_TRUE(commands.count(c)) << "no such command " << c << ": " << line;
            but.insert(c);
          }
        }
        for (const auto& [c, f] : commands)
          if (!but.count(c)) group.push_back(c);
      } else {
        std::istringstream names(std::regex_replace(who, std::regex(","), " "));
        for (std::string c; names >> c;) {
          EXPECT_TRUE(commands.count(c)) << "no such command " << c << ": " << line;
          group.push_back(c);
        }
      }
      for (const auto& c : group) out[c].merge(longFlags(line.substr(line.find(':'))));
    } else {
      group.clear();
    }
  }
  return out;
}

TEST(ReadmeFlags, CliBlockListsEveryFlagOfEveryCommand) {
  const auto block = blockAfter(readme(), "## CLI");
  ASSERT_FALSE(block.empty()) << "no ```sh block under \"## CLI\"";
  const auto actual = cliCommands();
  ASSERT_TRUE(actual.count("explain") && actual.count("map dump")) << "cannot read smik --help";
  const auto documented = documentedCli(block, actual);
  for (const auto& [cmd, flags] : actual) {
    ASSERT_TRUE(documented.count(cmd)) << "the README's CLI block has no line for smik " << cmd;
    EXPECT_EQ(disagreement(documented.at(cmd), flags), "") << "smik " << cmd;
  }
  for (const auto& [cmd, flags] : documented) EXPECT_TRUE(actual.count(cmd)) << cmd;
}

// The readers above are what make the comparisons mean anything: they find
// flags a README line hides among placeholders and comments, and a flag the
// help has and the README lacks is reported by name.
TEST(ReadmeFlags, TheReadersSeeWhatTheyShould) {
  EXPECT_EQ(longFlags("x [--a-b N|--c] -n|--namespace NS --d=1 a--e"),
            (Flags{"--a-b", "--c", "--namespace", "--d"}));
  const std::map<std::string, Flags> commands = {{"explain", {}}, {"policy", {}}, {"map dump", {}}};
  const auto doc = documentedCli({"build/smik explain --from X  # --not-this",
                                  "build/smik map dump policy|ipcache",
                                  "# explain, policy: [--manifests DIR",
                                  "#   --node N]",
                                  "# every command: [--grpc S]",
                                  "#   --also"},
                                 commands);
  EXPECT_EQ(doc.at("explain"), (Flags{"--from", "--manifests", "--node", "--grpc", "--also"}));
  EXPECT_EQ(doc.at("policy"), (Flags{"--manifests", "--node", "--grpc", "--also"}));
  EXPECT_EQ(doc.at("map dump"), (Flags{"--grpc", "--also"}));
  const auto but = documentedCli({"# every command but policy, map dump: [--grpc S]"}, commands);
  EXPECT_EQ(but.at("explain"), (Flags{"--grpc"}));
  EXPECT_FALSE(but.count("policy"));
}

}  // namespace
