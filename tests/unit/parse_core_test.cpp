// The Kubernetes kinds smik reads: Pods, Services, EndpointSlices
// (their fields, defaults and errors).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <regex>
#include <string>

#include "agent/model/parse.h"
#include "tests/unit/parse_support.h"

namespace smik::model {
namespace {

using ::testing::HasSubstr;

// ---- core kinds, metadata, defaults -----------------------------------------

TEST(Pod, Fields) {
  const auto p = one<Pod>(R"(
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  serviceAccountName: web
  serviceAccount: legacy
  nodeName: node-a
  hostNetwork: false
status:
  phase: Running
  podIP: 10.0.0.7
  podIPs:
  - ip: 10.0.0.7
  - ip: fd00::7
)");
  EXPECT_EQ(p.meta.name, "web-1");
  EXPECT_EQ(p.meta.ns, "shop");
  EXPECT_EQ(p.meta.labels.at("app"), "web");
  EXPECT_EQ(p.service_account, "web");
  EXPECT_EQ(p.node_name, "node-a");
  EXPECT_FALSE(p.host_network);
  EXPECT_EQ(p.phase, "Running");
  EXPECT_EQ(p.ips, (std::vector<std::string>{"10.0.0.7", "fd00::7"}));
}

TEST(Pod, FallbacksAndDefaults) {
  const auto deprecated = one<Pod>(
      "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
      "spec: {serviceAccount: old, hostNetwork: true}\nstatus: {podIP: 192.168.1.2}\n");
  EXPECT_EQ(deprecated.meta.ns, "default");
  EXPECT_EQ(deprecated.service_account, "old");
  EXPECT_TRUE(deprecated.host_network);
  EXPECT_EQ(deprecated.ips, std::vector<std::string>{"192.168.1.2"});

  const auto bare = one<Pod>("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n");
  EXPECT_EQ(bare.service_account, "default");
  EXPECT_TRUE(bare.node_name.empty());
  EXPECT_TRUE(bare.phase.empty());
  EXPECT_TRUE(bare.ips.empty());
  EXPECT_FALSE(bare.host_network);

  const auto pending = one<Pod>(
      "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {phase: Pending, podIP: \"\"}\n");
  EXPECT_TRUE(pending.ips.empty());
}

TEST(Pod, Errors) {
  EXPECT_EQ(error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: 10.0.0.256}\n"),
            "t.yaml: Pod default/p: status.podIP: invalid IP address \"10.0.0.256\"");
  EXPECT_THAT(
      error(
          "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIPs: [{ip: 'fd00::zz'}]}\n"),
      HasSubstr("status.podIPs[0].ip: invalid IP address \"fd00::zz\""));
  EXPECT_THAT(error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIPs: [{}]}\n"),
              HasSubstr("missing required field status.podIPs[0].ip"));
  EXPECT_THAT(error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {hostNetwork: yes}\n"),
              HasSubstr("spec.hostNetwork: expected a boolean, got \"yes\""));
  EXPECT_THAT(
      error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {hostNetwork: \"true\"}\n"),
      HasSubstr("spec.hostNetwork: expected a boolean"));
  EXPECT_THAT(error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: [a]\n"),
              HasSubstr("spec: expected a map, got a list"));
}

TEST(Pod, ContainerPorts) {
  const auto p = one<Pod>(R"(
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: app
    ports:
    - {name: http, containerPort: 8080}
    - {containerPort: 53, protocol: UDP}
    - {name: sctp, containerPort: 9999, protocol: SCTP}
    - {name: dns-tcp, containerPort: 53, protocol: TCP}
  - name: no-ports
  - name: sidecar
    ports: [{name: admin, containerPort: 15000, protocol: ""}]
)");
  ASSERT_EQ(p.container_ports.size(), 4u);  // the SCTP port is dropped
  EXPECT_EQ(p.container_ports[0].name, "http");
  EXPECT_EQ(p.container_ports[0].port, 8080);
  EXPECT_EQ(p.container_ports[0].proto, Proto::kTcp);
  EXPECT_EQ(p.container_ports[1].name, "");
  EXPECT_EQ(p.container_ports[1].port, 53);
  EXPECT_EQ(p.container_ports[1].proto, Proto::kUdp);
  EXPECT_EQ(p.container_ports[2].name, "dns-tcp");
  EXPECT_EQ(p.container_ports[2].proto, Proto::kTcp);
  EXPECT_EQ(p.container_ports[3].name, "admin");
  EXPECT_EQ(p.container_ports[3].port, 15000);
  EXPECT_EQ(p.container_ports[3].proto, Proto::kTcp);
  EXPECT_TRUE(one<Pod>("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n").container_ports.empty());
}

TEST(Pod, ContainerPortErrors) {
  const auto bad = [](const std::string& port) {
    return error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        "  - {name: a}\n  - name: b\n    ports: [" +
        port + "]\n");
  };
  EXPECT_EQ(
      bad("{name: http}"),
      "t.yaml: Pod default/p: missing required field spec.containers[1].ports[0].containerPort");
  EXPECT_THAT(bad("{containerPort: 0}"),
              HasSubstr("spec.containers[1].ports[0].containerPort: port 0 out of range 1..65535"));
  EXPECT_THAT(bad("{containerPort: 65536}"), HasSubstr("port 65536 out of range 1..65535"));
  EXPECT_THAT(
      bad("{containerPort: \"80\"}"),
      HasSubstr("spec.containers[1].ports[0].containerPort: expected an integer, got \"80\""));
  EXPECT_THAT(bad("{containerPort: 80, protocol: HTTP}"),
              HasSubstr("spec.containers[1].ports[0].protocol: unsupported protocol \"HTTP\" "
                        "(TCP, UDP or SCTP)"));
  EXPECT_THAT(bad("{containerPort: 80, protocol: tcp}"), HasSubstr("unsupported protocol \"tcp\""));
  // An SCTP port is dropped, but still has to be a port.
  EXPECT_THAT(bad("{containerPort: 0, protocol: SCTP}"), HasSubstr("port 0 out of range"));
  EXPECT_THAT(bad("{containerPort: 80, name: [x]}"),
              HasSubstr("spec.containers[1].ports[0].name: expected a string, got a list"));
  EXPECT_THAT(error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: {}}\n"),
              HasSubstr("spec.containers: expected a list, got a map"));
}

// ---- Service ----------------------------------------------------------------

TEST(Service, Fields) {
  const auto svc = one<Service>(R"(
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:10:96::a"]
  selector: {app: web, tier: "1"}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: https, port: 443, targetPort: "8443", protocol: TCP}
  - {name: grpc, port: 9090, targetPort: grpc-port}
  - {name: dns, port: 53, protocol: UDP}
  - {name: sctp, port: 3868, protocol: SCTP}
  - {port: 8000, targetPort: 0}
  - {port: 8001, targetPort: ""}
  - {port: 8002, targetPort: null, nodePort: 30002}
)");
  EXPECT_EQ(svc.meta.ns, "shop");
  EXPECT_EQ(svc.meta.labels.at("app"), "web");
  EXPECT_EQ(svc.type, "NodePort");
  EXPECT_EQ(svc.cluster_ips, (std::vector<std::string>{"10.96.0.10", "fd00:10:96::a"}));
  EXPECT_TRUE(svc.has_selector);
  EXPECT_EQ(svc.selector, (std::map<std::string, std::string>{{"app", "web"}, {"tier", "1"}}));
  ASSERT_EQ(svc.ports.size(), 7u);  // SCTP dropped
  const auto expectPort = [](const ServicePort& p, const std::string& name, uint16_t port,
                             Proto proto, uint16_t target, const std::string& target_name) {
    SCOPED_TRACE(std::to_string(port));
    EXPECT_EQ(p.name, name);
    EXPECT_EQ(p.port, port);
    EXPECT_EQ(p.proto, proto);
    EXPECT_EQ(p.target_port_number, target);
    EXPECT_EQ(p.target_port_name, target_name);
  };
  expectPort(svc.ports[0], "http", 80, Proto::kTcp, 8080, "");
  expectPort(svc.ports[1], "https", 443, Proto::kTcp, 8443, "");
  expectPort(svc.ports[2], "grpc", 9090, Proto::kTcp, 0, "grpc-port");
  expectPort(svc.ports[3], "dns", 53, Proto::kUdp, 53, "");
  expectPort(svc.ports[4], "", 8000, Proto::kTcp, 8000, "");
  expectPort(svc.ports[5], "", 8001, Proto::kTcp, 8001, "");
  expectPort(svc.ports[6], "", 8002, Proto::kTcp, 8002, "");
}

TEST(Service, DefaultsHeadlessAndSelectorless) {
  const auto bare = one<Service>("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n");
  EXPECT_EQ(bare.meta.ns, "default");
  EXPECT_EQ(bare.type, "ClusterIP");
  EXPECT_TRUE(bare.cluster_ips.empty());
  EXPECT_TRUE(bare.ports.empty());
  EXPECT_TRUE(bare.selector.empty());
  EXPECT_FALSE(bare.has_selector);

  const auto only_ip = one<Service>(
      "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
      "spec: {clusterIP: 10.0.0.1, clusterIPs: [], ports: [{port: 80}], selector: {}}\n");
  EXPECT_EQ(only_ip.cluster_ips, std::vector<std::string>{"10.0.0.1"});
  EXPECT_FALSE(only_ip.has_selector);  // an empty selector selects nothing
  ASSERT_EQ(only_ip.ports.size(), 1u);
  EXPECT_EQ(only_ip.ports[0].target_port_number, 80);
  EXPECT_EQ(only_ip.ports[0].proto, Proto::kTcp);

  for (const char* spec : {"{clusterIP: None}", "{clusterIP: \"None\", clusterIPs: [None]}",
                           "{clusterIP: \"\"}", "{clusterIPs: [\"\"]}", "{type: \"\"}"}) {
    const auto headless = one<Service>(
        std::string("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: ") + spec + "\n");
    EXPECT_TRUE(headless.cluster_ips.empty()) << spec;
    EXPECT_EQ(headless.type, "ClusterIP") << spec;
  }
  EXPECT_EQ(one<Service>("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                         "spec: {type: ExternalName, externalName: db.example.com}\n")
                .type,
            "ExternalName");
}

TEST(Service, Errors) {
  const auto bad = [](const std::string& spec) {
    return error("apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: n}\nspec: " + spec +
                 "\n");
  };
  EXPECT_EQ(bad("{clusterIP: 10.0.0.256}"),
            "t.yaml: Service n/s: spec.clusterIP: invalid IP address \"10.0.0.256\"");
  EXPECT_THAT(bad("{clusterIPs: [10.0.0.1, 'fd00::zz']}"),
              HasSubstr("spec.clusterIPs[1]: invalid IP address \"fd00::zz\""));
  EXPECT_THAT(bad("{clusterIP: none}"), HasSubstr("spec.clusterIP: invalid IP address \"none\""));
  EXPECT_THAT(bad("{clusterIP: 10}"), HasSubstr("spec.clusterIP: expected a string, got 10"));
  EXPECT_THAT(bad("{clusterIPs: 10.0.0.1}"), HasSubstr("spec.clusterIPs: expected a list"));
  EXPECT_EQ(bad("{ports: [{port: 80}, {port: 0}]}"),
            "t.yaml: Service n/s: spec.ports[1].port: port 0 out of range 1..65535");
  EXPECT_THAT(bad("{ports: [{port: 65536}]}"),
              HasSubstr("spec.ports[0].port: port 65536 out of range"));
  EXPECT_THAT(bad("{ports: [{name: http}]}"),
              HasSubstr("missing required field spec.ports[0].port"));
  EXPECT_THAT(bad("{ports: [{port: \"80\"}]}"),
              HasSubstr("spec.ports[0].port: expected an integer, got \"80\""));
  EXPECT_THAT(bad("{ports: [{port: 80, targetPort: 70000}]}"),
              HasSubstr("spec.ports[0].targetPort: port 70000 out of range 1..65535"));
  EXPECT_THAT(bad("{ports: [{port: 80, targetPort: \"70000\"}]}"),
              HasSubstr("spec.ports[0].targetPort: port 70000 out of range 1..65535"));
  EXPECT_THAT(bad("{ports: [{port: 80, targetPort: -1}]}"),
              HasSubstr("spec.ports[0].targetPort: port -1 out of range"));
  EXPECT_THAT(bad("{ports: [{port: 80, targetPort: 80.5}]}"),
              HasSubstr("spec.ports[0].targetPort: expected an integer or a port name, got 80.5"));
  EXPECT_THAT(
      bad("{ports: [{port: 80, targetPort: [80]}]}"),
      HasSubstr("spec.ports[0].targetPort: expected an integer or a port name, got a list"));
  EXPECT_THAT(bad("{ports: [{port: 80, targetPort: Http_Port}]}"),
              HasSubstr("spec.ports[0].targetPort: invalid port name \"Http_Port\""));
  EXPECT_THAT(bad("{ports: [{port: 80, targetPort: a-very-long-port-name}]}"),
              HasSubstr("invalid port name"));
  EXPECT_THAT(bad("{ports: [{port: 80, protocol: ICMP}]}"),
              HasSubstr("spec.ports[0].protocol: unsupported protocol \"ICMP\""));
  EXPECT_THAT(bad("{selector: {app: 1}}"),
              HasSubstr("spec.selector.app: expected a string, got 1"));
  EXPECT_THAT(bad("{type: [ClusterIP]}"), HasSubstr("spec.type: expected a string, got a list"));
  EXPECT_THAT(error("apiVersion: apps/v1\nkind: Service\nmetadata: {name: s}\n"),
              HasSubstr("unsupported apiVersion \"apps/v1\" for Service"));
}

// ---- EndpointSlice ----------------------------------------------------------

TEST(EndpointSlice, V1Fields) {
  const auto es = one<EndpointSlice>(R"(
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  namespace: shop
  labels: {kubernetes.io/service-name: web, endpointslice.kubernetes.io/managed-by: x}
addressType: IPv4
endpoints:
- addresses: [10.1.0.5]
  conditions: {ready: true, serving: true, terminating: false}
  targetRef: {kind: Pod, name: web-1, namespace: shop}
  nodeName: node-a
- addresses: [10.1.0.6, 10.1.0.7]
  conditions: {ready: false}
  targetRef: {kind: Node, name: node-b}
- addresses: [10.1.0.8]
- addresses: [10.1.0.9]
  conditions: {ready: null}
  targetRef: {name: nameless-kind}
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: dns, port: 53, protocol: UDP}
- {name: sctp, port: 3868, protocol: SCTP}
- {port: 9090}
- {name: any}
)");
  EXPECT_EQ(es.meta.ns, "shop");
  EXPECT_EQ(es.service_name, "web");
  EXPECT_EQ(es.address_type, "IPv4");
  ASSERT_EQ(es.endpoints.size(), 4u);
  EXPECT_EQ(es.endpoints[0].addresses, std::vector<std::string>{"10.1.0.5"});
  EXPECT_TRUE(es.endpoints[0].ready);
  EXPECT_EQ(es.endpoints[0].target_pod, "web-1");
  EXPECT_EQ(es.endpoints[1].addresses, (std::vector<std::string>{"10.1.0.6", "10.1.0.7"}));
  EXPECT_FALSE(es.endpoints[1].ready);
  EXPECT_EQ(es.endpoints[1].target_pod, "");  // not a Pod
  EXPECT_TRUE(es.endpoints[2].ready);         // no conditions: ready
  EXPECT_EQ(es.endpoints[2].target_pod, "");
  EXPECT_TRUE(es.endpoints[3].ready);  // ready: null
  EXPECT_EQ(es.endpoints[3].target_pod, "");
  ASSERT_EQ(es.ports.size(), 4u);  // SCTP dropped
  EXPECT_EQ(es.ports[0].name, "http");
  EXPECT_EQ(es.ports[0].port, 8080);
  EXPECT_EQ(es.ports[0].proto, Proto::kTcp);
  EXPECT_EQ(es.ports[1].port, 53);
  EXPECT_EQ(es.ports[1].proto, Proto::kUdp);
  EXPECT_EQ(es.ports[2].name, "");
  EXPECT_EQ(es.ports[2].port, 9090);
  EXPECT_EQ(es.ports[2].proto, Proto::kTcp);
  EXPECT_EQ(es.ports[3].name, "any");
  EXPECT_EQ(es.ports[3].port, 0);  // absent: not restricted
}

std::string slice(const std::string& version, const std::string& address_type,
                  const std::string& rest) {
  return "apiVersion: discovery.k8s.io/" + version +
         "\nkind: EndpointSlice\nmetadata:\n  name: es\n  labels: {kubernetes.io/service-name: "
         "svc}\naddressType: " +
         address_type + "\n" + rest;
}

TEST(EndpointSlice, V1beta1Ipv6FqdnAndEmpty) {
  const auto beta = one<EndpointSlice>(
      slice("v1beta1", "IPv4",
            "endpoints:\n- addresses: [10.0.0.1]\n  conditions: {ready: false}\n"
            "  topology: {kubernetes.io/hostname: node-a}\n"
            "  targetRef: {kind: Pod, name: p}\nports: [{name: http, port: 80}]\n"));
  EXPECT_EQ(beta.meta.ns, "default");
  EXPECT_EQ(beta.service_name, "svc");
  ASSERT_EQ(beta.endpoints.size(), 1u);
  EXPECT_FALSE(beta.endpoints[0].ready);
  EXPECT_EQ(beta.endpoints[0].target_pod, "p");
  ASSERT_EQ(beta.ports.size(), 1u);
  EXPECT_EQ(beta.ports[0].port, 80);

  const auto v6 = one<EndpointSlice>(
      slice("v1", "IPv6", "endpoints: [{addresses: ['fd00::1', '2001:db8::2']}]\n"));
  EXPECT_EQ(v6.address_type, "IPv6");
  ASSERT_EQ(v6.endpoints.size(), 1u);
  EXPECT_EQ(v6.endpoints[0].addresses, (std::vector<std::string>{"fd00::1", "2001:db8::2"}));

  // FQDN slices parse, but nothing in them is an address smik can use.
  const auto fqdn = one<EndpointSlice>(
      slice("v1", "FQDN", "endpoints: [{addresses: [db.example.com]}]\nports: [{port: 5432}]\n"));
  EXPECT_EQ(fqdn.address_type, "FQDN");
  EXPECT_TRUE(fqdn.endpoints.empty());
  ASSERT_EQ(fqdn.ports.size(), 1u);
  EXPECT_EQ(fqdn.ports[0].port, 5432);

  const auto empty = one<EndpointSlice>(slice("v1", "IPv4", "endpoints: null\nports: []\n"));
  EXPECT_TRUE(empty.endpoints.empty());
  EXPECT_TRUE(empty.ports.empty());
}

TEST(EndpointSlice, Errors) {
  EXPECT_EQ(error("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                  "metadata: {name: es, namespace: n, labels: {app: x}}\naddressType: IPv4\n"),
            "t.yaml: EndpointSlice n/es: missing required field "
            "metadata.labels.kubernetes.io/service-name");
  EXPECT_THAT(error("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                    "metadata: {name: es}\naddressType: IPv4\n"),
              HasSubstr("missing required field metadata.labels.kubernetes.io/service-name"));
  EXPECT_THAT(error("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                    "metadata: {name: es, labels: {kubernetes.io/service-name: ''}}\n"
                    "addressType: IPv4\n"),
              HasSubstr("missing required field metadata.labels.kubernetes.io/service-name"));
  EXPECT_EQ(error(slice("v1", "IPv4", "endpoints: [{addresses: [10.0.0.1, 10.0.0.256]}]\n")),
            "t.yaml: EndpointSlice default/es: endpoints[0].addresses[1]: invalid IPv4 address "
            "\"10.0.0.256\"");
  EXPECT_THAT(error(slice("v1", "IPv4", "endpoints: [{addresses: ['fd00::1']}]\n")),
              HasSubstr("endpoints[0].addresses[0]: invalid IPv4 address \"fd00::1\""));
  EXPECT_THAT(error(slice("v1", "IPv6", "endpoints: [{addresses: [10.0.0.1]}]\n")),
              HasSubstr("endpoints[0].addresses[0]: invalid IPv6 address \"10.0.0.1\""));
  EXPECT_THAT(error(slice("v1", "IPv4", "endpoints: [{addresses: [web-1]}]\n")),
              HasSubstr("invalid IPv4 address \"web-1\""));
  EXPECT_THAT(error(slice("v1", "IPv4", "endpoints: [{conditions: {ready: true}}]\n")),
              HasSubstr("missing required field endpoints[0].addresses"));
  EXPECT_THAT(error(slice("v1", "IPv4",
                          "endpoints: [{addresses: [10.0.0.1], conditions: "
                          "{ready: \"true\"}}]\n")),
              HasSubstr("endpoints[0].conditions.ready: expected a boolean, got \"true\""));
  EXPECT_THAT(error(slice("v1", "IPv4", "ports: [{port: 0}]\n")),
              HasSubstr("ports[0].port: port 0 out of range 1..65535"));
  EXPECT_THAT(error(slice("v1", "IPv4", "ports: [{port: 65536}]\n")),
              HasSubstr("ports[0].port: port 65536 out of range 1..65535"));
  EXPECT_THAT(error(slice("v1", "IPv4", "ports: [{port: 80, protocol: ICMP}]\n")),
              HasSubstr("ports[0].protocol: unsupported protocol \"ICMP\""));
  EXPECT_THAT(error(slice("v1", "IPv5", "")),
              HasSubstr("addressType: unsupported address type \"IPv5\" (IPv4, IPv6 or FQDN)"));
  EXPECT_THAT(error("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                    "metadata: {name: es, labels: {kubernetes.io/service-name: s}}\n"),
              HasSubstr("missing required field addressType"));
  EXPECT_THAT(error(slice("v2", "IPv4", "")),
              HasSubstr("unsupported apiVersion \"discovery.k8s.io/v2\" for EndpointSlice"));
  EXPECT_THAT(error("apiVersion: v1\nkind: EndpointSlice\nmetadata: {name: es}\n"),
              HasSubstr("unsupported apiVersion \"v1\" for EndpointSlice"));
}

}  // namespace
}  // namespace smik::model
