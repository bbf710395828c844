// Offline checks of the cluster install under daemonset/ (plain manifests,
// kustomization, Helm chart, gen-certs.sh, Dockerfile). No root, no cluster:
// the parts that need kubectl, helm or openssl skip, saying so, when the
// tool is not on PATH. The same checks run on the plain files and on what
// `kubectl kustomize` and `helm template` render, so the three cannot drift.
// This file: the Helm chart's values, and what kubectl and helm render.
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

// ---- Helm chart (static) -----------------------------------------------------------

TEST(Daemonset, HelmChartValuesCoverTheTemplates) {
  Y chart(YAML::LoadFile((kChart / "Chart.yaml").string()));
  EXPECT_EQ(str(chart["apiVersion"]), "v2");
  EXPECT_EQ(str(chart["name"]), "smik");
  EXPECT_FALSE(str(chart["version"]).empty());
  Y values(YAML::LoadFile((kChart / "values.yaml").string()));
  for (const char* v :
       {"image.repository", "image.tag", "image.pullPolicy", "accessMode", "meshNamespaces",
        "meshAll", "httpRules", "logLevel", "privileged", "resources", "tolerations",
        "tls.api.existingSecret", "tls.peer.existingSecret"})
    EXPECT_TRUE(valuesHave(values, v)) << "values.yaml lacks " << v;

  std::regex ref(R"re(\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+))re");
  size_t refs = 0;
  for (const auto& e : fs::directory_iterator(kChart / "templates")) {
    std::string src = readFile(e.path());
    for (auto it = std::sregex_iterator(src.begin(), src.end(), ref); it != std::sregex_iterator();
         ++it) {
      ++refs;
      std::string dotted = (*it)[1].str().substr(1);
      EXPECT_TRUE(valuesHave(values, dotted))
          << e.path().filename() << " uses .Values." << dotted << ", which values.yaml lacks";
    }
  }
  EXPECT_GT(refs, 20u) << "the scan found (almost) no .Values references";

  // Helm's defaults are the plain install's.
  Y cm = find(plainInstall(), "ConfigMap", "smik-config")["data"];
  EXPECT_EQ(str(values["accessMode"]), str(cm["SMIK_ACCESS_MODE"]));
  EXPECT_EQ(str(values["httpRules"]), str(cm["SMIK_HTTP_RULES"]));
  EXPECT_EQ(str(values["httpNonHttp1"]), str(cm["SMIK_HTTP_NON_HTTP1"]));
  EXPECT_EQ(str(values["hostTraffic"]), str(cm["SMIK_HOST_TRAFFIC"]));
  EXPECT_EQ(str(values["clusterDomain"]), str(cm["SMIK_CLUSTER_DOMAIN"]));
  EXPECT_EQ(str(values["denyResponse"]), str(cm["SMIK_DENY_RESPONSE"]));
  EXPECT_EQ(str(values["meshAll"]), str(cm["SMIK_MESH_ALL"]));
  EXPECT_EQ(str(values["logLevel"]), str(cm["SMIK_LOG_LEVEL"]));
  EXPECT_EQ(str(values["metricsWindow"]), str(cm["SMIK_METRICS_WINDOW"]));
  EXPECT_EQ(str(values["ctMax"]), str(cm["SMIK_CT_MAX"]));
  EXPECT_TRUE(values["meshNamespaces"].items().empty());
  EXPECT_EQ(str(cm["SMIK_MESH_NAMESPACES"]), "");
  EXPECT_EQ(str(values["privileged"]), "false");
}

// ---- rendered by the real tools --------------------------------------------------

TEST(Daemonset, KubectlKustomizeRendersThePlainFiles) {
  if (!onPath("kubectl")) GTEST_SKIP() << "kubectl not on PATH";
  Ran r = run("kubectl kustomize " + quote(kInstall.string()));
  ASSERT_EQ(r.status, 0) << r.err;
  Docs rendered = loadDocs(r.out);
  EXPECT_EQ(kindNames(rendered), kindNames(plainInstall()));
  checkAgentDaemonSet(rendered, kNs);
  checkRbac(rendered, kNs);
  checkApiService(rendered, kNs);
}

TEST(Daemonset, PrivilegedPatchMakesOnlyTheAgentPrivileged) {
  if (!onPath("kubectl")) GTEST_SKIP() << "kubectl not on PATH";
  TempDir overlay;
  fs::copy_file(kInstall / "privileged-patch.yaml", overlay.path / "privileged-patch.yaml");
  std::ofstream(overlay.path / "kustomization.yaml")
      << "resources:\n  - " << fs::relative(kInstall, overlay.path).string()
      << "\npatches:\n  - path: privileged-patch.yaml\n";
  Ran r = run("kubectl kustomize " + quote(overlay.path.string()));
  ASSERT_EQ(r.status, 0) << r.err;
  Docs rendered = loadDocs(r.out);
  Y ds = find(rendered, "DaemonSet", "smik-agent");
  ASSERT_TRUE(ds);
  Y containers = ds["spec"]["template"]["spec"]["containers"];
  ASSERT_EQ(containers.items().size(), 1u)
      << "the patch added a container instead of changing the agent";
  EXPECT_TRUE(privileged(byName(containers, "agent")));
  EXPECT_EQ(kindNames(rendered), kindNames(plainInstall()));
}

TEST(Daemonset, HelmTemplateRendersTheSameInstall) {
  if (!onPath("helm")) GTEST_SKIP() << "helm not on PATH";
  Ran lint = run("helm lint " + quote(kChart.string()));
  EXPECT_EQ(lint.status, 0) << lint.out << lint.err;
  Ran r = helmTemplate("");
  ASSERT_EQ(r.status, 0) << r.err;
  Docs rendered = loadDocs(r.out);
  // Helm creates the namespace (--create-namespace) and generates the TLS Secrets.
  auto expected = kindNames(plainInstall());
  expected.erase({"Namespace", kNs});
  expected.insert({"Secret", "smik-api-tls"});
  expected.insert({"Secret", "smik-peer-tls"});
  EXPECT_EQ(kindNames(rendered), expected);
  checkAgentDaemonSet(rendered, kNs);
  checkRbac(rendered, kNs);
  checkApiService(rendered, kNs);
  // The aggregator trusts the CA that signed the serving certificate.
  Y secret = find(rendered, "Secret", "smik-api-tls");
  EXPECT_EQ(str(find(rendered, "APIService", "v1alpha1.metrics.smi-spec.io")["spec"]["caBundle"]),
            str(secret["data"]["ca.crt"]));

  Ran priv = helmTemplate("--set privileged=true");
  ASSERT_EQ(priv.status, 0) << priv.err;
  Y ds = find(loadDocs(priv.out), "DaemonSet", "smik-agent");
  EXPECT_TRUE(privileged(byName(ds["spec"]["template"]["spec"]["containers"], "agent")));

  // An existing Secret without a known CA must not yield an unverifiable APIService.
  EXPECT_NE(helmTemplate("--set tls.api.existingSecret=mine").status, 0);
}

}  // namespace
}  // namespace daemonset_test
