// Offline checks of the cluster install under daemonset/ (plain manifests,
// kustomization, Helm chart, gen-certs.sh, Dockerfile). No root, no cluster:
// the parts that need kubectl, helm or openssl skip, saying so, when the
// tool is not on PATH. The same checks run on the plain files and on what
// `kubectl kustomize` and `helm template` render, so the three cannot drift.
// This file: the plain files, the CRDs, the agent's flags, gen-certs.sh and
// the Dockerfile.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agent/source/kube_cache.h"
#include "agent/telemetry/store.h"
#include "api/http/http_server.h"

#include "tests/unit/daemonset_checks.h"
#include "tests/unit/daemonset_support.h"

namespace daemonset_test {
namespace {

// ---- plain files ---------------------------------------------------------------

TEST(Daemonset, EveryYamlParsesAndNamesARealKind) {
  auto files = yamlFiles();
  std::set<std::string> names;
  for (const auto& f : files) names.insert(fs::relative(f, kInstall).string());
  for (const char* f : {"namespace.yaml", "rbac.yaml", "config.yaml", "daemonset.yaml",
                        "apiservice.yaml", "kustomization.yaml", "privileged-patch.yaml",
                        "uninstall.yaml", "helm/smik/Chart.yaml", "helm/smik/values.yaml"})
    EXPECT_TRUE(names.count(f)) << "missing daemonset/" << f;
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    Docs docs;
    ASSERT_NO_THROW(docs = loadFile(f));
    ASSERT_FALSE(docs.empty());
    if (f == kChart / "Chart.yaml" || f == kChart / "values.yaml") continue;
    for (const auto& d : docs) {
      std::string av = str(d["apiVersion"]), kind = str(d["kind"]);
      EXPECT_TRUE(kRealKinds.count({av, kind}))
          << av << " " << kind << " is not a kind the install uses";
      if (kind != "Kustomization") {
        EXPECT_FALSE(str(d["metadata"]["name"]).empty());
      }
    }
  }
}

TEST(Daemonset, KustomizationListsEveryManifestAndOnlyThose) {
  std::set<std::string> listed;
  for (const auto& r : kustomizationResources()) {
    EXPECT_TRUE(fs::exists(kInstall / r)) << r << " is listed but missing";
    EXPECT_TRUE(listed.insert(r).second) << r << " is listed twice";
  }
  std::set<std::string> expected;
  for (const auto& f : yamlFiles()) {
    auto rel = fs::relative(f, kInstall);
    if (*rel.begin() == "helm" || kNotResources.count(rel.string())) continue;
    expected.insert(rel.string());
  }
  EXPECT_EQ(listed, expected);
  // The opt-in patch is there to be uncommented.
  EXPECT_NE(readFile(kInstall / "kustomization.yaml").find("- path: privileged-patch.yaml"),
            std::string::npos);
}

TEST(Daemonset, AgentDaemonSet) { checkAgentDaemonSet(plainInstall(), kNs); }

TEST(Daemonset, ClusterRoleCoversEveryWatchedResource) {
  auto resources = smik::kube::smikResources();
  ASSERT_GE(resources.size(), 14u);
  EXPECT_EQ(apiGroupOf("v1"), "");
  EXPECT_EQ(apiGroupOf("discovery.k8s.io/v1"), "discovery.k8s.io");
  checkRbac(plainInstall(), kNs);
}

// The RBAC check itself: without any one of its rules the role must fail it.
TEST(Daemonset, RbacCheckCatchesEveryMissingRule) {
  Y role = find(plainInstall(), "ClusterRole", "smik-agent");
  ASSERT_TRUE(role);
  ASSERT_TRUE(rbacProblems(role).empty());
  const size_t n = role["rules"].items().size();
  ASSERT_GT(n, 0u);
  for (size_t i = 0; i < n; ++i) {
    YAML::Node cut = YAML::Clone(role.node());
    YAML::Node rules(YAML::NodeType::Sequence);
    for (size_t j = 0; j < n; ++j)
      if (j != i) rules.push_back(YAML::Clone(role.node()["rules"][j]));
    cut["rules"] = rules;
    EXPECT_FALSE(rbacProblems(Y(cut)).empty()) << "rule " << i << " is not needed, or not checked";
  }
  YAML::Node extra = YAML::Clone(role.node());
  extra["rules"][0]["verbs"].push_back("delete");
  EXPECT_FALSE(rbacProblems(Y(extra)).empty()) << "a write verb went unnoticed";
}

TEST(Daemonset, ApiService) {
  Docs docs = plainInstall();
  checkApiService(docs, kNs);
  // Plain manifests cannot know the CA gen-certs.sh makes.
  EXPECT_EQ(str(find(docs, "APIService",
                     "v1alpha1.metrics.smi-spec.io")["spec"]["insecureSkipTLSVerify"]),
            "true");
}

TEST(Daemonset, UninstallRemovesTheAgentsPins) {
  Docs docs = loadFile(kInstall / "uninstall.yaml");
  Y ds = find(docs, "DaemonSet", "smik-uninstall");
  ASSERT_TRUE(ds);
  Y pod = ds["spec"]["template"]["spec"];
  EXPECT_EQ(str(pod["hostNetwork"]), "true") << "tc hooks are in the node's netns";
  // Not an agent: no peer, no Service endpoint.
  EXPECT_NE(str(ds["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]),
            "smik-agent");
  bool everyTaint = false;
  for (const auto& t : pod["tolerations"].items())
    everyTaint |= str(t["operator"]) == "Exists" && !t["key"];
  EXPECT_TRUE(everyTaint);
  Y agentDs = find(plainInstall(), "DaemonSet", "smik-agent");
  auto agentArgs =
      parseArgs(byName(agentDs["spec"]["template"]["spec"]["containers"], "agent")["args"]);
  Y un = byName(pod["initContainers"], "uninstall");
  ASSERT_TRUE(un);
  auto args = parseArgs(un["args"]);
  EXPECT_TRUE(args.count("--uninstall"));
  EXPECT_EQ(args["--pin-dir"], agentArgs["--pin-dir"]);
  std::string bpffs = hostPathVolume(pod, "/sys/fs/bpf");
  ASSERT_FALSE(bpffs.empty());
  Y m = mountOf(un, bpffs);
  ASSERT_TRUE(m);
  EXPECT_TRUE(under(args["--pin-dir"], str(m["mountPath"])));
  for (const auto& c : pod["initContainers"].items())
    for (const auto& vm : c["volumeMounts"].items())
      if (str(vm["mountPropagation"]) == "Bidirectional") {
        EXPECT_TRUE(privileged(c)) << str(c["name"]);
      }
}

std::string sha256Hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::string hex;
  char byte[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(byte, sizeof byte, "%02x", md[i]);
    hex += byte;
  }
  return hex;
}

std::set<std::string> yamlFilesIn(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".yaml") names.insert(e.path().filename().string());
  return names;
}

// daemonset/crds holds the SMI SDK's CRDs byte for byte (daemonset/crds/README.md
// names the upstream commit): an edit here would make smik serve a schema no
// other SMI implementation accepts. Pinned by hash, so a change is deliberate.
TEST(Daemonset, CrdsAreTheSmiSdkOnesUnchanged) {
  const std::map<std::string, std::string> upstream = {
      {"access.yaml", "8411dba41e6d8021795519d83d9fb64a436cf856ca307cf678594f4a11456f46"},
      {"httproutegroup.yaml", "a5cc9041bb6c24e351a698602f080e88892da7b8819bb91fccaa5c5d94d6a90b"},
      {"split.yaml", "edfbf0a4cb2f7a6eba0354bada43156600ada5ab00541ae9d2dc05e74f32f3ae"},
      {"tcproute.yaml", "8d6b064d609c57586f42d89e16f219a9d8f24bb97c0b42e5fac54e2b035687c5"},
      {"udproute.yaml", "25230e36028c7cc47bb467c7f13d5d65c30734c4163dad7873d986a3716fc5db"},
  };
  std::set<std::string> names;
  for (const auto& [name, hash] : upstream) names.insert(name);
  EXPECT_EQ(yamlFilesIn(kInstall / "crds"), names);
  for (const auto& [name, hash] : upstream)
    EXPECT_EQ(sha256Hex(readFile(kInstall / "crds" / name)), hash) << name << " was edited";
}

// Helm wants the CRDs inside the chart; that copy must not drift from the one
// the kustomization installs.
TEST(Daemonset, ChartCrdsAreTheInstallOnes) {
  const fs::path crds = kInstall / "crds";
  const std::set<std::string> names = yamlFilesIn(crds);
  ASSERT_FALSE(names.empty()) << crds;
  EXPECT_EQ(yamlFilesIn(kChart / "crds"), names);
  for (const auto& f : names)
    EXPECT_EQ(readFile(kChart / "crds" / f), readFile(crds / f)) << f << " differs from " << crds;
}

// The DaemonSet's args and ConfigMap keys (read with envFrom) that no CLI11
// option or environment name in `sources` defines.
std::vector<std::string> optionsTheAgentLacks(const std::string& sources, const Docs& docs) {
  std::set<std::string> flags, envs;
  std::regex opt(R"re(add_(?:option|flag)\(\s*"([^"]+)")re"), env(R"re(envname\(\s*"([^"]+)")re");
  for (auto it = std::sregex_iterator(sources.begin(), sources.end(), opt);
       it != std::sregex_iterator(); ++it) {
    std::stringstream names((*it)[1].str());
    std::string n;
    while (std::getline(names, n, ',')) flags.insert(n);
  }
  for (auto it = std::sregex_iterator(sources.begin(), sources.end(), env);
       it != std::sregex_iterator(); ++it)
    envs.insert((*it)[1]);
  Y ds = find(docs, "DaemonSet", "smik-agent");
  std::vector<std::string> missing;
  for (const auto& [flag, v] :
       parseArgs(byName(ds["spec"]["template"]["spec"]["containers"], "agent")["args"]))
    if (!flags.count(flag)) missing.push_back(flag);
  for (const auto& [key, value] : find(docs, "ConfigMap", "smik-config")["data"].entries())
    if (!envs.count(key)) missing.push_back(key);
  return missing;
}

// Every .cpp under agent/ and api/ (the peer flags live with the peer API).
std::string agentSources() {
  std::string all;
  for (const char* dir : {"agent", "api"})
    for (const auto& e : fs::recursive_directory_iterator(kRepo / dir))
      if (e.path().extension() == ".cpp") all += readFile(e.path());
  return all;
}

// The real agent accepts what the manifests pass. A flag renamed in the
// agent but not in the manifests is a DaemonSet that crash-loops on
// "unknown option": a failure, never a skip.
TEST(Daemonset, AgentHasEveryFlagTheManifestsPass) {
  const std::string sources = agentSources();
  ASSERT_NE(sources.find("\"--pin-dir\""), std::string::npos)
      << "no CLI11 options found under agent/";
  for (const auto& m : optionsTheAgentLacks(sources, plainInstall()))
    ADD_FAILURE() << "the manifests pass " << m << ", the agent has no such option";
}

// The check above catches a rename: the same sources with one flag and one
// environment name renamed leave exactly those missing.
TEST(Daemonset, ARenamedFlagIsReportedMissing) {
  std::string sources = agentSources();
  const Docs docs = plainInstall();
  ASSERT_TRUE(optionsTheAgentLacks(sources, docs).empty());
  for (const auto& [from, to] :
       {std::pair{"add_option(\"--pin-dir", "add_option(\"--bpf-pin-dir"},
        std::pair{"envname(\"SMIK_ACCESS_MODE\"", "envname(\"SMIK_MODE\""}}) {
    const size_t at = sources.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    sources.replace(at, std::string(from).size(), to);
  }
  std::vector<std::string> missing = optionsTheAgentLacks(sources, docs);
  std::sort(missing.begin(), missing.end());
  EXPECT_EQ(missing, (std::vector<std::string>{"--pin-dir", "SMIK_ACCESS_MODE"}));
}

TEST(Daemonset, GenCertsMakesBothSecrets) {
  if (!onPath("openssl") || !onPath("bash")) GTEST_SKIP() << "openssl or bash not on PATH";
  TempDir tmp;
  Ran r = run("bash " + quote((kInstall / "gen-certs.sh").string()) + " --dry-run --days 2 --out " +
              quote(tmp.path.string()));
  ASSERT_EQ(r.status, 0) << r.err;
  Docs docs = loadDocs(r.out);
  ASSERT_EQ(docs.size(), 2u) << r.out;
  for (const auto& [name, dir] : std::vector<std::pair<std::string, std::string>>{
           {"smik-api-tls", "api"}, {"smik-peer-tls", "peer"}}) {
    SCOPED_TRACE(name);
    Y s = find(docs, "Secret", name);
    ASSERT_TRUE(s);
    EXPECT_EQ(str(s["metadata"]["namespace"]), kNs);
    EXPECT_EQ(str(s["type"]), "kubernetes.io/tls");
    for (const char* k : {"tls.crt", "tls.key", "ca.crt"})
      EXPECT_EQ(base64Decode(str(s["data"][k])), readFile(tmp.path / dir / k)) << k;
    fs::path d = tmp.path / dir;
    EXPECT_EQ(run("openssl verify -CAfile " + quote((d / "ca.crt").string()) + " " +
                  quote((d / "tls.crt").string()))
                  .status,
              0);
  }
  Ran api = run("openssl x509 -noout -ext subjectAltName,extendedKeyUsage -in " +
                quote((tmp.path / "api" / "tls.crt").string()));
  EXPECT_NE(api.out.find("DNS:smik-api.smik-system.svc"), std::string::npos) << api.out;
  EXPECT_NE(api.out.find("Server Authentication"), std::string::npos) << api.out;
  Ran peer = run("openssl x509 -noout -ext subjectAltName,extendedKeyUsage -in " +
                 quote((tmp.path / "peer" / "tls.crt").string()));
  EXPECT_NE(peer.out.find("DNS:smik-peer.smik-system"), std::string::npos) << peer.out;
  EXPECT_EQ(peer.out.find("IP Address"), std::string::npos) << "peers are dialled by name, not IP";
  EXPECT_NE(peer.out.find("Client Authentication"), std::string::npos)
      << "peers are mTLS clients too";
  // Separate CAs: the API's serving key cannot join the peer mesh.
  EXPECT_NE(run("openssl verify -CAfile " + quote((tmp.path / "peer" / "ca.crt").string()) + " " +
                quote((tmp.path / "api" / "tls.crt").string()))
                .status,
            0);
}

TEST(Daemonset, DockerfileShipsBothBinariesOnDebian12) {
  std::string df = readFile(kInstall / "Dockerfile");
  EXPECT_NE(df.find("FROM debian:12 AS build"), std::string::npos);
  EXPECT_NE(df.find("FROM debian:12-slim"), std::string::npos);
  EXPECT_NE(df.find(".ci/deps"), std::string::npos) << "build packages must come from .ci/deps";
  EXPECT_NE(df.find("--target smik-agent smik"), std::string::npos);
  EXPECT_NE(df.find("COPY --from=build /build/smik-agent /build/smik /usr/local/bin/"),
            std::string::npos);
  EXPECT_NE(df.find("ENTRYPOINT [\"/usr/local/bin/smik-agent\"]"), std::string::npos);
  std::string ignore = readFile(kRepo / ".dockerignore");
  EXPECT_NE(ignore.find("build/"), std::string::npos);
  EXPECT_NE(ignore.find(".git"), std::string::npos);
}

}  // namespace
}  // namespace daemonset_test
