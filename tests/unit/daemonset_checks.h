// The checks the install tests run alike on the plain files, on what
// `kubectl kustomize` renders and on what `helm template` renders, so the
// three cannot drift: RBAC, the agent's DaemonSet, the APIService.
#pragma once

#include "tests/unit/daemonset_support.h"

namespace daemonset_test {

// ---- RBAC --------------------------------------------------------------------

// "v1" -> "" (core), "discovery.k8s.io/v1" -> "discovery.k8s.io".
inline std::string apiGroupOf(const std::string& apiVersion) {
  auto slash = apiVersion.find('/');
  return slash == std::string::npos ? "" : apiVersion.substr(0, slash);
}

inline bool allows(const Y& role, const std::string& group, const std::string& resource,
            const std::string& verb) {
  for (const auto& rule : role["rules"].items()) {
    if (rule["resourceNames"]) continue;  // never the whole collection
    bool g = contains(rule["apiGroups"], group) || contains(rule["apiGroups"], "*");
    bool r = contains(rule["resources"], resource) || contains(rule["resources"], "*");
    bool v = contains(rule["verbs"], verb) || contains(rule["verbs"], "*");
    if (g && r && v) return true;
  }
  return false;
}

// Every grant the agent needs that `role` lacks, and every grant it has
// beyond reading (least privilege), as readable lines.
inline std::vector<std::string> rbacProblems(const Y& role) {
  std::vector<std::string> out;
  for (const auto& res : smik::kube::smikResources())
    for (const char* verb : {"get", "list", "watch"})
      if (!allows(role, apiGroupOf(res.api_version), res.plural, verb))
        out.push_back("no " + std::string(verb) + " on " + res.plural + " (" + res.api_version +
                      ")");
  for (const char* group : {"", "events.k8s.io"})
    for (const char* verb : {"create", "patch"})
      if (!allows(role, group, "events", verb))
        out.push_back("no " + std::string(verb) + " on events in group '" + group + "'");
  if (!allows(role, "authorization.k8s.io", "subjectaccessreviews", "create"))
    out.push_back("no create on subjectaccessreviews");
  const std::set<std::string> read = {"get", "list", "watch"};
  for (const auto& rule : role["rules"].items())
    for (const auto& verb : rule["verbs"].items()) {
      if (read.count(str(verb))) continue;
      for (const auto& res : rule["resources"].items())
        if (str(res) != "events" && str(res) != "subjectaccessreviews")
          out.push_back("writes: " + str(verb) + " on " + str(res));
    }
  return out;
}

inline void expectBinding(const Docs& docs, const std::string& kind, const std::string& roleKind,
                   const std::string& roleName, const std::string& ns) {
  for (const auto& d : docs) {
    if (str(d["kind"]) != kind || str(d["roleRef"]["kind"]) != roleKind ||
        str(d["roleRef"]["name"]) != roleName)
      continue;
    if (kind == "RoleBinding") {
      EXPECT_EQ(str(d["metadata"]["namespace"]), "kube-system");
    }
    for (const auto& s : d["subjects"].items())
      if (str(s["kind"]) == "ServiceAccount" && str(s["name"]) == "smik-agent" &&
          str(s["namespace"]) == ns)
        return;
  }
  ADD_FAILURE() << "no " << kind << " of " << roleKind << " " << roleName << " to ServiceAccount "
                << ns << "/smik-agent";
}

inline void checkRbac(const Docs& docs, const std::string& ns) {
  Y role = find(docs, "ClusterRole", "smik-agent");
  ASSERT_TRUE(role) << "no ClusterRole smik-agent";
  for (const auto& p : rbacProblems(role)) ADD_FAILURE() << "ClusterRole smik-agent: " << p;
  Y sa = find(docs, "ServiceAccount", "smik-agent");
  ASSERT_TRUE(sa) << "no ServiceAccount smik-agent";
  EXPECT_EQ(str(sa["metadata"]["namespace"]), ns);
  expectBinding(docs, "ClusterRoleBinding", "ClusterRole", "smik-agent", ns);
  expectBinding(docs, "ClusterRoleBinding", "ClusterRole", "system:auth-delegator", ns);
  expectBinding(docs, "RoleBinding", "Role", "extension-apiserver-authentication-reader", ns);
}

// ---- DaemonSet -----------------------------------------------------------------

// Name of the volume that is hostPath `path`, or "".
inline std::string hostPathVolume(const Y& pod, const std::string& path) {
  for (const auto& v : pod["volumes"].items())
    if (str(v["hostPath"]["path"]) == path) return str(v["name"]);
  return "";
}

inline Y mountOf(const Y& container, const std::string& volume) {
  for (const auto& m : container["volumeMounts"].items())
    if (str(m["name"]) == volume) return m;
  return Y();
}

inline bool privileged(const Y& c) { return str(c["securityContext"]["privileged"]) == "true"; }

// The init container that mounts `volume` with Bidirectional propagation, if any.
inline Y bidirectionalInit(const Y& pod, const std::string& volume) {
  for (const auto& c : pod["initContainers"].items()) {
    Y m = mountOf(c, volume);
    if (m && str(m["mountPropagation"]) == "Bidirectional") return c;
  }
  return Y();
}

inline std::string script(const Y& c) {
  std::string s;
  for (const auto& part : {c["command"], c["args"]})
    for (const auto& a : part.items()) s += str(a) + "\n";
  return s;
}

inline void checkAgentDaemonSet(const Docs& docs, const std::string& ns) {
  Y ds = find(docs, "DaemonSet", "smik-agent");
  ASSERT_TRUE(ds) << "no DaemonSet smik-agent";
  EXPECT_EQ(str(ds["metadata"]["namespace"]), ns);
  // The agents find their peers by this label.
  EXPECT_EQ(str(ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]), "smik-agent");
  Y tmpl = ds["spec"]["template"];
  EXPECT_EQ(str(tmpl["metadata"]["labels"]["app.kubernetes.io/name"]), "smik-agent");
  EXPECT_EQ(str(ds["spec"]["updateStrategy"]["type"]), "RollingUpdate");
  EXPECT_EQ(str(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"]), "1");

  Y pod = tmpl["spec"];
  EXPECT_EQ(str(pod["hostNetwork"]), "true");
  EXPECT_EQ(str(pod["dnsPolicy"]), "ClusterFirstWithHostNet");
  EXPECT_EQ(str(pod["priorityClassName"]), "system-node-critical");
  bool everyTaint = false;
  for (const auto& t : pod["tolerations"].items())
    everyTaint |= str(t["operator"]) == "Exists" && !t["key"] && !t["effect"];
  EXPECT_TRUE(everyTaint) << "no toleration {operator: Exists} for every taint";
  ASSERT_TRUE(pod["terminationGracePeriodSeconds"]);
  EXPECT_LE(pod["terminationGracePeriodSeconds"].num(1000), 30);
  EXPECT_EQ(str(pod["serviceAccountName"]), "smik-agent");

  // Kubernetes refuses Bidirectional propagation in unprivileged containers.
  for (const auto& list : {pod["initContainers"], pod["containers"]})
    for (const auto& c : list.items())
      for (const auto& m : c["volumeMounts"].items())
        if (str(m["mountPropagation"]) == "Bidirectional") {
          EXPECT_TRUE(privileged(c)) << str(c["name"]) << ": Bidirectional but not privileged";
        }

  Y agent = byName(pod["containers"], "agent");
  ASSERT_TRUE(agent) << "no container named agent";
  EXPECT_FALSE(privileged(agent)) << "the agent is privileged by default";
  std::set<std::string> caps;
  for (const auto& c : agent["securityContext"]["capabilities"]["add"].items()) caps.insert(str(c));
  for (const char* c : {"BPF", "NET_ADMIN", "SYS_ADMIN", "PERFMON"})
    EXPECT_TRUE(caps.count(c)) << "capability " << c << " not added";
  // Least privilege: maps are charged to the memory cgroup since Linux 5.11
  // (tests/install runs the agent without it); older kernels run privileged.
  EXPECT_FALSE(caps.count("SYS_RESOURCE")) << "CAP_SYS_RESOURCE is not needed since Linux 5.11";
  bool unconfined =
      str(tmpl["metadata"]["annotations"]
              ["container.apparmor.security.beta.kubernetes.io/agent"]) == "unconfined" ||
      str(agent["securityContext"]["appArmorProfile"]["type"]) == "Unconfined";
  EXPECT_TRUE(unconfined) << "runtime-default AppArmor forbids pinning under /sys/fs/bpf";

  auto args = parseArgs(agent["args"]);
  for (const auto& [flag, value] : args)
    EXPECT_TRUE(kPlannedFlags.count(flag)) << "agent flag " << flag << " is not in the plan";
  for (const char* f : {"--node", "--http", "--pin-dir", "--cgroup", "--grpc", "--peer-listen",
                        "--peer-tls-cert", "--peer-tls-key", "--peer-tls-ca", "--secure-listen",
                        "--tls-cert-file", "--tls-private-key-file"})
    EXPECT_TRUE(args.count(f)) << "agent lacks " << f;
  EXPECT_EQ(args["--node"], "$(NODE_NAME)");
  Y nodeName = byName(agent["env"], "NODE_NAME");
  EXPECT_EQ(str(nodeName["valueFrom"]["fieldRef"]["fieldPath"]), "spec.nodeName");

  // Settings come from ConfigMap smik-config, as env names the agent knows.
  bool fromConfig = false;
  for (const auto& e : agent["envFrom"].items())
    fromConfig |= str(e["configMapRef"]["name"]) == "smik-config";
  EXPECT_TRUE(fromConfig) << "agent does not read ConfigMap smik-config";
  Y cm = find(docs, "ConfigMap", "smik-config");
  ASSERT_TRUE(cm) << "no ConfigMap smik-config";
  EXPECT_EQ(str(cm["metadata"]["namespace"]), ns);
  for (const auto& [key, value] : cm["data"].entries()) EXPECT_TRUE(kPlannedEnv.count(key)) << key;
  const std::set<std::string> modes = {"strict", "permissive", "per-destination"};
  EXPECT_TRUE(modes.count(str(cm["data"]["SMIK_ACCESS_MODE"])))
      << str(cm["data"]["SMIK_ACCESS_MODE"]);
  const std::set<std::string> rules = {"enforce", "deny", "allow-tcp"};
  EXPECT_TRUE(rules.count(str(cm["data"]["SMIK_HTTP_RULES"])));
  EXPECT_EQ(str(cm["data"]["SMIK_HOST_TRAFFIC"]), "allow") << "the default: probes pass";
  EXPECT_EQ(str(cm["data"]["SMIK_DENY_RESPONSE"]), "reject") << "the default: denials fail fast";
  EXPECT_EQ(str(cm["data"]["SMIK_HTTP_NON_HTTP1"]), "deny") << "the default: fail closed";
  const std::set<std::string> bools = {"true", "false"};
  EXPECT_TRUE(bools.count(str(cm["data"]["SMIK_MESH_ALL"])));

  // bpffs from the host, mounted there by a privileged init container if needed.
  std::string bpffs = hostPathVolume(pod, "/sys/fs/bpf");
  ASSERT_FALSE(bpffs.empty()) << "no hostPath /sys/fs/bpf";
  EXPECT_TRUE(bidirectionalInit(pod, bpffs)) << "nothing mounts bpffs Bidirectional";
  Y bpfMount = mountOf(agent, bpffs);
  ASSERT_TRUE(bpfMount) << "agent does not mount bpffs";
  EXPECT_EQ(str(bpfMount["mountPath"]), "/sys/fs/bpf");
  EXPECT_NE(str(bpfMount["mountPropagation"]), "") << "agent would miss a later bpffs mount";
  EXPECT_TRUE(under(args["--pin-dir"], str(bpfMount["mountPath"]))) << args["--pin-dir"];

  // The cgroup2 root: its own host mount, made by an init container.
  std::string cg = hostPathVolume(pod, "/run/smik/cgroupv2");
  ASSERT_FALSE(cg.empty()) << "no hostPath /run/smik/cgroupv2";
  Y cgMount = mountOf(agent, cg);
  ASSERT_TRUE(cgMount) << "agent does not mount the cgroup2 root";
  EXPECT_EQ(args["--cgroup"], str(cgMount["mountPath"]));
  Y cgInit = bidirectionalInit(pod, cg);
  ASSERT_TRUE(cgInit) << "nothing mounts cgroup2 Bidirectional";
  std::string sh = script(cgInit);
  EXPECT_NE(sh.find("mount -t cgroup2"), std::string::npos) << sh;
  EXPECT_NE(sh.find("cgroup2fs"), std::string::npos) << "mounts again on every start: " << sh;

  // The CLI's socket, where `smik` looks by default (kubectl exec ... smik status).
  std::string run = hostPathVolume(pod, "/run/smik");
  ASSERT_FALSE(run.empty()) << "no hostPath /run/smik";
  Y runMount = mountOf(agent, run);
  ASSERT_TRUE(runMount);
  EXPECT_TRUE(under(args["--grpc"], str(runMount["mountPath"]))) << args["--grpc"];
  EXPECT_EQ(args["--grpc"], cliDefaultSocket());

  std::string btf = hostPathVolume(pod, "/sys/kernel/btf");
  ASSERT_FALSE(btf.empty()) << "no hostPath /sys/kernel/btf";
  Y btfMount = mountOf(agent, btf);
  ASSERT_TRUE(btfMount);
  EXPECT_EQ(str(btfMount["readOnly"]), "true");

  // TLS Secrets: optional, so the agent starts before gen-certs.sh ran.
  auto checkSecret = [&](const std::string& secret, std::vector<std::string> flags) {
    std::string vol;
    for (const auto& v : pod["volumes"].items())
      if (str(v["secret"]["secretName"]) == secret) {
        vol = str(v["name"]);
        EXPECT_EQ(str(v["secret"]["optional"]), "true") << secret;
      }
    ASSERT_FALSE(vol.empty()) << "Secret " << secret << " not mounted";
    Y m = mountOf(agent, vol);
    ASSERT_TRUE(m) << secret;
    for (const auto& f : flags)
      EXPECT_TRUE(under(args[f], str(m["mountPath"]))) << f << "=" << args[f];
  };
  checkSecret("smik-peer-tls", {"--peer-tls-cert", "--peer-tls-key", "--peer-tls-ca"});
  checkSecret("smik-api-tls", {"--tls-cert-file", "--tls-private-key-file"});

  // Listen ports are declared, and as host ports (hostNetwork).
  for (const auto& [flag, name] : std::vector<std::pair<std::string, std::string>>{
           {"--http", "http"}, {"--peer-listen", "peer-grpc"}, {"--secure-listen", "api"}}) {
    Y p = byName(agent["ports"], name);
    ASSERT_TRUE(p) << "no container port " << name;
    EXPECT_EQ(p["containerPort"].num(-1), portOf(args[flag])) << flag;
    EXPECT_EQ(str(p["hostPort"]), str(p["containerPort"])) << name;
  }

  // Probes on the agent's HTTP port, on paths the agent serves them.
  for (const auto& [probe, path] :
       std::vector<std::pair<std::string, std::string>>{{"startupProbe", "/healthz"},
                                                        {"livenessProbe", "/healthz"},
                                                        {"readinessProbe", "/readyz"}}) {
    Y get = agent[probe]["httpGet"];
    ASSERT_TRUE(get) << probe << " is not httpGet";
    EXPECT_EQ(str(get["path"]), path) << probe;
    EXPECT_TRUE(servedToRemoteClients(str(get["path"])))
        << probe << ": the agent does not serve " << str(get["path"]) << " to kubelet";
    EXPECT_EQ(resolvePort(get["port"], agent), portOf(args["--http"])) << probe;
  }
  // Prometheus scrapes the port of --http, at /metrics unless told otherwise.
  Y scrape = tmpl["metadata"]["annotations"];
  EXPECT_EQ(str(scrape["prometheus.io/scrape"]), "true");
  EXPECT_EQ(scrape["prometheus.io/port"].num(-1), portOf(args["--http"]));
  const std::string metrics_path =
      scrape["prometheus.io/path"] ? str(scrape["prometheus.io/path"]) : "/metrics";
  EXPECT_TRUE(servedToRemoteClients(metrics_path)) << metrics_path;

  Y startup = agent["startupProbe"];
  EXPECT_GE(startup["periodSeconds"].num(10) * startup["failureThreshold"].num(3), 120)
      << "startup probe gives up before a large cluster's first sync";

  Y res = agent["resources"];
  EXPECT_TRUE(res["requests"]["cpu"] && res["requests"]["memory"]) << "no requests";
  EXPECT_TRUE(res["limits"]["memory"]) << "no memory limit";
}

inline void checkApiService(const Docs& docs, const std::string& ns) {
  Y api = find(docs, "APIService", "v1alpha1.metrics.smi-spec.io");
  ASSERT_TRUE(api) << "no APIService v1alpha1.metrics.smi-spec.io";
  Y spec = api["spec"];
  EXPECT_EQ(str(spec["group"]), "metrics.smi-spec.io");
  EXPECT_EQ(str(spec["version"]), "v1alpha1");
  EXPECT_EQ(str(spec["service"]["name"]), "smik-api");
  EXPECT_EQ(str(spec["service"]["namespace"]), ns);
  EXPECT_EQ(str(spec["service"]["port"]), "443");
  // The API server rejects both together, and needs one of them.
  bool insecure = str(spec["insecureSkipTLSVerify"]) == "true";
  bool ca = !str(spec["caBundle"]).empty();
  EXPECT_NE(insecure, ca) << "exactly one of insecureSkipTLSVerify and caBundle";

  Y svc = find(docs, "Service", "smik-api");
  ASSERT_TRUE(svc) << "no Service smik-api";
  EXPECT_EQ(str(svc["metadata"]["namespace"]), ns);
  Y ds = find(docs, "DaemonSet", "smik-agent");
  ASSERT_TRUE(ds);
  Y labels = ds["spec"]["template"]["metadata"]["labels"];
  ASSERT_FALSE(svc["spec"]["selector"].entries().empty());
  for (const auto& [key, value] : svc["spec"]["selector"].entries())
    EXPECT_EQ(str(labels[key]), str(value)) << "selector misses the agents";
  Y agent = byName(ds["spec"]["template"]["spec"]["containers"], "agent");
  auto args = parseArgs(agent["args"]);
  bool found = false;
  for (const auto& p : svc["spec"]["ports"].items())
    if (str(p["port"]) == "443") {
      found = true;
      EXPECT_EQ(resolvePort(p["targetPort"], agent), portOf(args["--secure-listen"]));
    }
  EXPECT_TRUE(found) << "Service smik-api has no port 443";
}

// ---- Helm ----------------------------------------------------------------------

inline bool valuesHave(const Y& values, const std::string& dotted) {
  Y n = values;
  std::stringstream ss(dotted);
  std::string key;
  while (std::getline(ss, key, '.')) {
    // Present with an empty value (tag: "", meshNamespaces: []) counts.
    bool has = false;
    for (const auto& [k, v] : n.entries()) has |= k == key;
    if (!has) return false;
    n = n[key];
  }
  return true;
}

inline Ran helmTemplate(const std::string& extra) {
  return run("helm template smik " + quote(kChart.string()) + " -n " + kNs + " --include-crds " +
             extra);
}

}  // namespace daemonset_test
