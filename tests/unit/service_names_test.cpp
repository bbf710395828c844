// Services named as a pod's DNS names them (README: SMI semantics): NAME,
// NAME.NS, NAME.NS.svc, NAME.NS.svc.<cluster domain>, in every place a
// TrafficSplit names one; another namespace rejects the split, another
// cluster domain keeps it from applying.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "agent/base/names.h"
#include "tests/unit/services_support.h"

namespace smik {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

ServiceName split(const std::string& written) {
  ServiceName n;
  std::string why;
  EXPECT_TRUE(splitServiceName(written, &n, &why)) << written << ": " << why;
  return n;
}

std::string whyNot(const std::string& written) {
  ServiceName n;
  std::string why;
  EXPECT_FALSE(splitServiceName(written, &n, &why)) << written;
  return why;
}

TEST(ServiceName, EveryFormAPodResolves) {
  EXPECT_EQ(split("web").name, "web");
  EXPECT_EQ(split("web").ns, "");
  EXPECT_EQ(split("web").domain, "");
  EXPECT_EQ(split("web.prod").ns, "prod");
  EXPECT_EQ(split("web.prod.svc").ns, "prod");
  EXPECT_EQ(split("web.prod.svc").domain, "");
  EXPECT_EQ(split("web.prod.svc.cluster.local").name, "web");
  EXPECT_EQ(split("web.prod.svc.cluster.local").ns, "prod");
  EXPECT_EQ(split("web.prod.svc.cluster.local").domain, "cluster.local");
  // Absolute (a trailing dot), and DNS's case-insensitivity for svc and the domain.
  EXPECT_EQ(split("web.prod.svc.cluster.local.").domain, "cluster.local");
  EXPECT_EQ(split("web.prod.SVC.Cluster.Local").domain, "cluster.local");
  EXPECT_EQ(split("web.prod.svc.k8s.example.org").domain, "k8s.example.org");
}

TEST(ServiceName, WhatIsNoServiceName) {
  EXPECT_THAT(whyNot("web.prod.cluster"), HasSubstr("not a Service name"));
  EXPECT_THAT(whyNot("web.prod.pod.cluster.local"), HasSubstr("not a Service name"));
  EXPECT_THAT(whyNot("web..svc"), HasSubstr("empty DNS label"));
  EXPECT_THAT(whyNot(".web"), HasSubstr("empty DNS label"));
  EXPECT_THAT(whyNot("web."), HasSubstr("empty DNS label"));
  EXPECT_THAT(whyNot("web.prod.svc.cluster.local.."), HasSubstr("empty DNS label"));
}

TEST(ServiceName, ClusterDomainOrItsLeadingLabels) {
  EXPECT_TRUE(isClusterDomain("cluster.local", "cluster.local"));
  EXPECT_TRUE(isClusterDomain("CLUSTER.local", "cluster.local"));
  EXPECT_TRUE(isClusterDomain("cluster", "cluster.local"));  // OSM's documented short form
  EXPECT_FALSE(isClusterDomain("clus", "cluster.local"));
  EXPECT_FALSE(isClusterDomain("local", "cluster.local"));
  EXPECT_FALSE(isClusterDomain("cluster.local.other", "cluster.local"));
  EXPECT_FALSE(isClusterDomain("cluster.local", "k8s.example.org"));
  EXPECT_TRUE(isClusterDomain("k8s.example.org", "k8s.example.org"));
}

}  // namespace

namespace model {
namespace {

// The one TrafficSplit `yaml` parses to.
TrafficSplit one(const std::string& yaml) {
  const ParseResult r = parseManifests(yaml, "t.yaml");
  EXPECT_TRUE(r.errors.empty()) << (r.errors.empty() ? "" : r.errors[0].str());
  EXPECT_EQ(r.objects.size(), 1u);
  const auto* ts = r.objects.empty() ? nullptr : std::get_if<TrafficSplit>(&r.objects[0]);
  return ts ? *ts : TrafficSplit{};
}

// The one error `yaml` gives, as ParseError::str().
std::string error(const std::string& yaml) {
  const ParseResult r = parseManifests(yaml, "t.yaml");
  EXPECT_TRUE(r.objects.empty());
  EXPECT_EQ(r.errors.size(), 1u);
  return r.errors.empty() ? "" : r.errors[0].str();
}

std::string splitNaming(const std::string& root, const std::string& backend) {
  return "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\n"
         "metadata: {name: ts, namespace: shop}\nspec:\n  service: " +
         root + "\n  backends:\n  - {service: v1, weight: 90}\n  - {service: " + backend +
         ", weight: 10}\n";
}

TEST(TrafficSplitServiceNames, ResolvedToTheNameAlone) {
  for (const char* root : {"web", "web.shop", "web.shop.svc", "web.shop.svc.cluster.local",
                           "web.shop.svc.cluster"}) {
    const auto ts = one(splitNaming(root, "v2.shop.svc.cluster.local."));
    EXPECT_EQ(ts.service, "web") << root;
    ASSERT_EQ(ts.backends.size(), 2u);
    EXPECT_EQ(ts.backends[1].service, "v2");
  }
}

TEST(TrafficSplitServiceNames, QualifiedNamesKeepTheirDomainForTheCompiler) {
  const auto ts = one(splitNaming("web.shop.svc.cluster.local", "v2.shop"));
  ASSERT_EQ(ts.qualified.size(), 1u);
  EXPECT_EQ(ts.qualified[0].field, "spec.service");
  EXPECT_EQ(ts.qualified[0].written, "web.shop.svc.cluster.local");
  EXPECT_EQ(ts.qualified[0].domain, "cluster.local");
  EXPECT_TRUE(one(splitNaming("web.shop.svc", "v2")).qualified.empty());
}

TEST(TrafficSplitServiceNames, AnotherNamespaceRejectsTheSplit) {
  EXPECT_EQ(error(splitNaming("web.prod", "v2")),
            "t.yaml: TrafficSplit shop/ts: spec.service: \"web.prod\" names a Service in "
            "namespace \"prod\"; a TrafficSplit's Services are in its own namespace (\"shop\")");
  EXPECT_THAT(error(splitNaming("web", "v2.prod.svc.cluster.local")),
              HasSubstr("spec.backends[1].service: \"v2.prod.svc.cluster.local\" names a Service "
                        "in namespace \"prod\""));
  EXPECT_THAT(error(splitNaming("web.shop.pod", "v2")),
              HasSubstr("spec.service: \"web.shop.pod\": not a Service name"));
}

// Every version reads its names the same way (v1alpha1's weights are Quantities).
TEST(TrafficSplitServiceNames, EveryVersion) {
  for (const char* v : {"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"}) {
    const std::string yaml = std::string("apiVersion: split.smi-spec.io/") + v +
                             "\nkind: TrafficSplit\nmetadata: {name: ts, namespace: shop}\n"
                             "spec:\n  service: web.shop.svc\n  backends:\n"
                             "  - {service: v1.shop, weight: 1}\n";
    const auto ts = one(yaml);
    EXPECT_EQ(ts.service, "web") << v;
    ASSERT_EQ(ts.backends.size(), 1u);
    EXPECT_EQ(ts.backends[0].service, "v1") << v;
    EXPECT_THAT(error(yaml + "  - {service: v2.prod, weight: 1}\n"), HasSubstr("namespace \"prod\""))
        << v;
  }
}

}  // namespace
}  // namespace model

namespace compile {
namespace {

// A canary meant to send 0% to web-v2: written as the FQDN, it must not send
// half (the root balanced evenly) as it did when the name was taken literally.
TEST(TrafficSplitServiceNames, FqdnRootSplitsAsItsShortName) {
  for (const char* root : {"web", "web.prod", "web.prod.svc", "web.prod.svc.cluster.local"}) {
    const Plan p = compiled(canary() + split("s", root, {{"web-v1.prod.svc", "100"},
                                                         {"web-v2.prod.svc.cluster.local", "0"}}));
    const ServiceTable t = tableOf(p, "prod/web", 80);
    EXPECT_EQ(t.split, "prod/s") << root;
    EXPECT_THAT(groupServices(t), ElementsAre("prod/web-v1")) << root;
    EXPECT_THAT(messagesFor(p, splitRef("s")), ::testing::IsEmpty()) << root;
  }
}

TEST(TrafficSplitServiceNames, ClusterDomainComesFromTheNode) {
  const std::string yaml = canary() + split("s", "web.prod.svc.k8s.example.org",
                                            {{"web-v1", "9"}, {"web-v2", "1"}});
  // Not this cluster's domain: the split is not applied, and says why.
  const Plan other = compiled(yaml);
  EXPECT_EQ(tableOf(other, "prod/web", 80).split, "");
  EXPECT_THAT(messagesFor(other, splitRef("s")),
              ElementsAre("spec.service \"web.prod.svc.k8s.example.org\" is in cluster domain "
                          "k8s.example.org, not cluster.local (--cluster-domain): not applied"));
  NodeConfig n = node();
  n.cluster_domain = "k8s.example.org";
  const Plan mine = compile(testing::stateOf(yaml), n);
  const ServiceTable t = tableOf(mine, "prod/web", 80);
  EXPECT_EQ(t.split, "prod/s");
  EXPECT_NEAR(kernelShares(t)["prod/web-v2"], 0.1, 1e-9);
  EXPECT_THAT(messagesFor(mine, splitRef("s")), ::testing::IsEmpty());
}

TEST(TrafficSplitServiceNames, ABackendInAnotherDomainStopsTheWholeSplit) {
  const Plan p = compiled(canary() + split("s", "web", {{"web-v1", "0"},
                                                        {"web-v2.prod.svc.other.domain", "100"}}));
  EXPECT_EQ(tableOf(p, "prod/web", 80).split, "");
  EXPECT_THAT(messagesFor(p, splitRef("s")),
              ElementsAre(HasSubstr("spec.backends[1].service \"web-v2.prod.svc.other.domain\"")));
}

}  // namespace
}  // namespace compile
}  // namespace smik
