// The DaemonSet install, run as installed: the image built from
// daemonset/Dockerfile (base images made from Debian's packages, no
// registry), the DaemonSet's own pod template rendered as users render it and
// played with `podman kube play` as this node's pod, talking to the fake API
// server over HTTPS with in-cluster configuration, enforcing on test-bed pods.
// Everything the test makes (container storage, images, pods, the node's
// files) is named with the run's prefix and removed, also on failure.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agent/base/unique_fd.h"
#include "tests/e2e/fixture.h"
#include "tests/kube/fake_cluster.h"

namespace smik::install {
namespace {

using json = nlohmann::json;
using smik::testbed::command;
using smik::testbed::tryCommand;
using smik::testing::FakeCluster;
using smik::testing::yamlDocuments;
using namespace smik::e2e;  // test-bed helpers: SMI objects, traffic, polling

constexpr const char* kNamespace = "smik-system";
// What the image is tagged as in the run's own storage. Kustomize renders
// smik-agent:dev, which podman resolves to it locally (IfNotPresent).
constexpr const char* kImage = "localhost/smik-agent:dev";
constexpr const char* kInClusterDir = "/var/run/secrets/kubernetes.io/serviceaccount";

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void writeFile(const std::string& path, const std::string& text, mode_t mode = 0644) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
  ::chmod(path.c_str(), mode);
}

// Runs argv with stdout and stderr in one capture, for up to timeout_s
// (podman and image builds take longer than the test bed's `command`
// allows). Throws, with the output, when it fails or times out.
std::string run(const std::vector<std::string>& argv, int timeout_s) {
  char path[] = "/tmp/smik-install-out-XXXXXX";
  const UniqueFd out(::mkstemp(path));
  if (!out) throw std::runtime_error("mkstemp");
  ::unlink(path);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::dup2(out.get(), 1);
    ::dup2(out.get(), 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  bool timed_out = false;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(-pid, SIGKILL);  // its own process group: podman's helpers too
      ::waitpid(pid, &status, 0);
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string text;
  ::lseek(out.get(), 0, SEEK_SET);
  char buf[4096];
  for (ssize_t n; (n = ::read(out.get(), buf, sizeof buf)) > 0;) text.append(buf, n);
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  if (timed_out) throw std::runtime_error(cmd + ": timed out after " + std::to_string(timeout_s) + " s\n" + text);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error(cmd + ": failed (status " + std::to_string(status) + ")\n" + text);
  return text;
}

bool tryRun(const std::vector<std::string>& argv, int timeout_s) {
  try {
    run(argv, timeout_s);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

bool onPath(const std::string& tool) {
  return tryCommand({"sh", "-c", "command -v " + tool + " >/dev/null"});
}

bool isMountPoint(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string id, parent, dev, root, point;
    f >> id >> parent >> dev >> root >> point;
    if (point == path) return true;
  }
  return false;
}

std::string base64Decode(const std::string& in) {
  static const std::string chars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -8;
  for (char c : in) {
    auto p = chars.find(c);
    if (p == std::string::npos) continue;  // padding, newlines
    val = (val << 6) + static_cast<int>(p);
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xff));
      bits -= 8;
    }
  }
  return out;
}

// ---- the container runtime: podman with a storage of this run's own -------

// A directory per run: podman's configuration, storage (images, containers)
// and run state, and what the node's kubelet would write (volumes). Removing
// it removes everything the run built, whatever the machine already had
// (its own debian:12 stays untouched).
class Runtime {
 public:
  explicit Runtime(const std::string& dir) : dir_(dir) {
    fs::create_directories(dir_ + "/tmp");
    writeFile(dir_ + "/owner", std::to_string(getpid()) + "\n");
    // crun refuses hybrid cgroup layouts, runc does not; hosts that do not
    // grant CAP_SYS_RESOURCE cannot raise limits to podman's defaults.
    writeFile(dir_ + "/containers.conf",
              "[containers]\n"
              "default_ulimits = [\"nofile=20000:20000\", \"nproc=1000:1000\"]\n"
              "[engine]\n"
              "runtime = \"runc\"\n"
              "cgroup_manager = \"cgroupfs\"\n"
              "events_logger = \"file\"\n"
              "events_logfile_path = \"" + dir_ + "/events.log\"\n"
              "tmp_dir = \"" + dir_ + "/tmp\"\n");
    writeFile(dir_ + "/storage.conf", "[storage]\ndriver = \"overlay\"\ngraphroot = \"" + dir_ +
                                          "/storage\"\nrunroot = \"" + dir_ + "/run\"\n");
    setenv("CONTAINERS_CONF", (dir_ + "/containers.conf").c_str(), 1);
    setenv("CONTAINERS_STORAGE_CONF", (dir_ + "/storage.conf").c_str(), 1);
  }
  ~Runtime() { remove(dir_); }

  const std::string& dir() const { return dir_; }

  // Removes a run's containers, images and directory (this run's, or one a
  // killed run left: `dir` names its own configuration).
  static void remove(const std::string& dir) {
    const std::string env = "CONTAINERS_CONF=" + dir + "/containers.conf";
    const std::string storage = "CONTAINERS_STORAGE_CONF=" + dir + "/storage.conf";
    if (fs::exists(dir + "/storage.conf")) {
      for (auto args : {std::vector<std::string>{"pod", "rm", "--all", "--force"},
                        std::vector<std::string>{"rm", "--all", "--force"},
                        std::vector<std::string>{"rmi", "--all", "--force"},
                        std::vector<std::string>{"system", "reset", "--force"}}) {
        std::vector<std::string> argv = {"env", env, storage, "podman"};
        argv.insert(argv.end(), args.begin(), args.end());
        tryRun(argv, 120);
      }
    }
    // Overlay mounts podman could not take down would keep rm from finishing.
    std::ifstream in("/proc/self/mountinfo");
    std::vector<std::string> mounts;
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      std::string id, parent, dev, root, point;
      f >> id >> parent >> dev >> root >> point;
      if (point.rfind(dir + "/", 0) == 0) mounts.push_back(point);
    }
    for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) tryCommand({"umount", "-l", *it});
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  // Directories of runs whose test process is gone (killed before cleanup).
  static void removeStale() {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/var/tmp", ec)) {
      const std::string name = e.path().filename().string();
      if (name.size() < 14 || name.compare(name.size() - 13, 13, "-smik-install") != 0) continue;
      const pid_t owner = std::atoi(readFile(e.path().string() + "/owner").c_str());
      if (owner > 0 && ::kill(owner, 0) == 0) continue;
      Runtime::remove(e.path().string());
    }
  }

 private:
  std::string dir_;
};

std::string podman(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"podman"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, 120);
}

// ---- what the kubelet does with a DaemonSet's pod template -----------------

// The node the pod "runs on": its name, where its kubelet keeps the pod's
// volumes, and the API server its pods are told about.
struct Node {
  std::string name;
  std::string dir;
  std::string api_host;
  int api_port = 0;
  std::string token, ca_file;
};

// Rendered objects by "Kind/name" (ConfigMaps and Secrets the pod reads).
using Objects = std::map<std::string, json>;

// $(VAR) in command and args, from the container's environment; $$ is a
// literal $ and an unknown reference stays as written (as the kubelet does).
std::string expandVars(const std::string& s, const std::map<std::string, std::string>& env) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, 2, "$$") == 0) {
      out += '$';
      i += 2;
      continue;
    }
    if (s.compare(i, 2, "$(") == 0) {
      const auto close = s.find(')', i);
      if (close != std::string::npos) {
        auto it = env.find(s.substr(i + 2, close - i - 2));
        if (it != env.end()) {
          out += it->second;
          i = close + 1;
          continue;
        }
      }
    }
    out += s[i++];
  }
  return out;
}

// A probe's or port's number: numeric, or a named container port.
int portOf(const json& c, const json& port) {
  if (port.is_number()) return port.get<int>();
  for (const auto& p : c["ports"])
    if (p["name"] == port) return p["containerPort"].get<int>();
  throw std::runtime_error("no port named " + port.get<std::string>());
}

// The Pod the DaemonSet controller, the scheduler, the ServiceAccount
// admission plugin and the kubelet make of `ds` on `node`, for podman kube
// play: the template unchanged (securityContext, capabilities, hostNetwork,
// hostPath volumes, envFrom, probes) except for what those components
// resolve before a runtime sees it: the node name, the downward API,
// $(VAR) in args, Secret volumes as files, the token volume, the
// KUBERNETES_SERVICE_* variables, no port mappings on the host network, and
// a restart policy podman 4.3 runs init containers once under. Podman 4.3 does not play DaemonSets, nor
// fieldRef env other than a few metadata fields, nor $(VAR).
json kubeletPod(const json& ds, const std::string& pod_name, const Node& node, const Objects& objs) {
  const json& tmpl = ds.at("spec").at("template");
  const std::string ns = ds["metadata"].value("namespace", "default");
  json spec = tmpl.at("spec");
  spec["nodeName"] = node.name;
  const std::string vol_dir = node.dir + "/pods/" + pod_name + "/volumes";

  for (auto& v : spec["volumes"]) {
    if (!v.contains("secret") && !v.contains("configMap")) continue;
    const bool secret = v.contains("secret");
    const json& src = secret ? v["secret"] : v["configMap"];
    const std::string obj_name = src.value(secret ? "secretName" : "name", "");
    const std::string dir = vol_dir + "/" + v["name"].get<std::string>();
    fs::create_directories(dir);
    auto it = objs.find(std::string(secret ? "Secret/" : "ConfigMap/") + obj_name);
    if (it == objs.end()) {
      if (!src.value("optional", false))
        throw std::runtime_error("volume " + v["name"].get<std::string>() + ": no " + obj_name);
    } else {
      const int mode = src.value("defaultMode", 0644);
      for (auto& [key, value] : it->second["data"].items())
        writeFile(dir + "/" + key,
                  secret ? base64Decode(value.get<std::string>()) : value.get<std::string>(),
                  static_cast<mode_t>(mode));
    }
    v = {{"name", v["name"]}, {"hostPath", {{"path", dir}, {"type", "Directory"}}}};
  }
  // The projected token volume of the ServiceAccount admission plugin.
  const bool token = spec.value("automountServiceAccountToken", true);
  if (token) {
    const std::string dir = vol_dir + "/kube-api-access";
    writeFile(dir + "/token", node.token, 0600);
    writeFile(dir + "/ca.crt", readFile(node.ca_file));
    writeFile(dir + "/namespace", ns);
    spec["volumes"].push_back(
        {{"name", "kube-api-access"}, {"hostPath", {{"path", dir}, {"type", "Directory"}}}});
  }

  std::map<std::string, std::string> config_env;  // from envFrom, for $(VAR)
  for (const char* list : {"initContainers", "containers"}) {
    if (!spec.contains(list)) continue;
    for (auto& c : spec[list]) {
      std::map<std::string, std::string> env;
      for (const auto& from : c.value("envFrom", json::array())) {
        if (!from.contains("configMapRef")) continue;
        auto it = objs.find("ConfigMap/" + from["configMapRef"]["name"].get<std::string>());
        if (it == objs.end()) continue;
        for (auto& [k, val] : it->second["data"].items()) env[k] = val.get<std::string>();
      }
      json out_env = json::array();
      for (auto e : c.value("env", json::array())) {
        if (e.contains("valueFrom") && e["valueFrom"].contains("fieldRef")) {
          const std::string field = e["valueFrom"]["fieldRef"]["fieldPath"];
          std::string value;
          if (field == "spec.nodeName") value = node.name;
          else if (field == "metadata.namespace") value = ns;
          else if (field == "metadata.name") value = pod_name;
          else throw std::runtime_error("fieldRef " + field + ": not translated by this test");
          e = {{"name", e["name"]}, {"value", value}};
        }
        if (e.contains("value")) env[e["name"]] = e["value"].get<std::string>();
        out_env.push_back(e);
      }
      out_env.push_back({{"name", "KUBERNETES_SERVICE_HOST"}, {"value", node.api_host}});
      out_env.push_back({{"name", "KUBERNETES_SERVICE_PORT"}, {"value", std::to_string(node.api_port)}});
      c["env"] = out_env;
      for (const char* field : {"command", "args"})
        if (c.contains(field))
          for (auto& a : c[field]) a = expandVars(a.get<std::string>(), env);
      // Host-network pods publish no ports (the kubelet maps none), but
      // podman maps every listed port and refuses that without a pod
      // network. The probes' named ports are resolved first, as the kubelet
      // resolves them.
      for (const char* probe : {"startupProbe", "livenessProbe", "readinessProbe"})
        if (c.contains(probe) && c[probe].contains("httpGet"))
          c[probe]["httpGet"]["port"] = portOf(c, c[probe]["httpGet"]["port"]);
      if (spec.value("hostNetwork", false)) c.erase("ports");
      if (token)
        c["volumeMounts"].push_back(
            {{"name", "kube-api-access"}, {"mountPath", kInClusterDir}, {"readOnly", true}});
    }
  }
  // Podman 4.3 applies the pod's restart policy to init containers too, and
  // under Always (a DaemonSet's) restarts each one forever once it exited.
  // OnFailure keeps init containers once-only, as the kubelet runs them.
  spec["restartPolicy"] = "OnFailure";
  json meta = {{"name", pod_name}, {"namespace", ns}};
  if (tmpl["metadata"].contains("labels")) meta["labels"] = tmpl["metadata"]["labels"];
  if (tmpl["metadata"].contains("annotations")) meta["annotations"] = tmpl["metadata"]["annotations"];
  return {{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", meta}, {"spec", spec}};
}

const json& container(const json& pod, const std::string& name) {
  for (const auto& c : pod["spec"]["containers"])
    if (c["name"] == name) return c;
  throw std::runtime_error("no container " + name);
}

// The value of --flag=value (or --flag value) in a container's args.
std::string argValue(const json& c, const std::string& flag) {
  const auto& args = c.at("args");
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string a = args[i];
    if (a.rfind(flag + "=", 0) == 0) return a.substr(flag.size() + 1);
    if (a == flag && i + 1 < args.size()) return args[i + 1];
  }
  return "";
}

// Capability names, by bit (linux/capability.h).
const std::vector<std::string>& capNames() {
  static const std::vector<std::string> names = {
      "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
      "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
      "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
      "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
      "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
      "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"};
  return names;
}

// The effective capabilities of a process, by name.
std::set<std::string> capabilitiesOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::set<std::string> out;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    const unsigned long long mask = std::stoull(line.substr(7), nullptr, 16);
    for (size_t bit = 0; bit < capNames().size(); ++bit)
      if (mask & (1ULL << bit)) out.insert(capNames()[bit]);
  }
  return out;
}

// bpftool -j's answer; nothing attached is an empty answer, not [].
json bpftool(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"bpftool", "-j"};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out = command(argv);
  return out.find_first_not_of(" \n") == std::string::npos ? json::array() : json::parse(out);
}

// BPF object IDs attached where smik attaches: tc/tcx on the pods' host
// veths, the cgroup2 root. JSON of `bpftool -j`.
std::set<int> programsOn(const std::vector<std::string>& devs, const std::string& cgroup) {
  std::set<int> ids;
  for (const auto& dev : devs) {
    auto j = bpftool({"net", "show", "dev", dev});
    for (const auto& entry : j)
      for (const char* kind : {"tc", "tcx"})
        if (entry.contains(kind))
          for (const auto& p : entry[kind])
            if (p.contains("id")) ids.insert(p["id"].get<int>());
  }
  auto j = bpftool({"cgroup", "show", cgroup});
  for (const auto& p : j)
    if (p.value("name", "").rfind("smik_", 0) == 0) ids.insert(p["id"].get<int>());
  return ids;
}

bool programExists(int id) {
  return tryCommand({"bpftool", "prog", "show", "id", std::to_string(id)});
}

// ---- the install, rendered as users render it ------------------------------

// What `kubectl kustomize daemonset/` makes of the kustomization's two
// features the install uses (resources, images), for machines without
// kubectl: Debian does not package it.
std::vector<json> kustomizeWithoutKubectl(const std::string& dir) {
  auto k = yamlDocuments(readFile(dir + "/kustomization.yaml")).at(0);
  std::vector<json> out;
  for (const auto& r : k["resources"]) {
    auto docs = yamlDocuments(readFile(dir + "/" + r.get<std::string>()));
    out.insert(out.end(), docs.begin(), docs.end());
  }
  for (auto& d : out) {
    if (!d.contains("spec") || !d["spec"].contains("template")) continue;
    auto& spec = d["spec"]["template"]["spec"];
    // kubectl reads YAML 1.1, where `defaultMode: 0400` is octal; the YAML
    // 1.2 reading here made it decimal 400 (the manifests write modes so).
    if (spec.contains("volumes"))
      for (auto& v : spec["volumes"])
        for (const char* src : {"secret", "configMap"})
          if (v.contains(src) && v[src].contains("defaultMode"))
            v[src]["defaultMode"] =
                std::stoi(std::to_string(v[src]["defaultMode"].get<int>()), nullptr, 8);
    for (const char* list : {"initContainers", "containers"}) {
      if (!spec.contains(list)) continue;
      for (auto& c : spec[list])
        for (const auto& img : k.value("images", json::array())) {
          const std::string image = c["image"];
          const std::string name = img["name"];
          if (image != name && image.rfind(name + ":", 0) != 0) continue;
          c["image"] = img.value("newName", name) + ":" +
                       img.value("newTag", image.substr(std::min(image.size(), name.size() + 1)));
        }
    }
  }
  return out;
}

// The install as users render it: `kubectl kustomize daemonset/` (or the
// same without kubectl), or the chart with `helm template`.
std::vector<json> render(const std::string& how) {
  if (how == "helm")
    return yamlDocuments(command({"helm", "template", "smik", SMIK_SOURCE_DIR "/daemonset/helm/smik",
                                  "--namespace", kNamespace, "--set", "image.repository=localhost/smik-agent",
                                  "--set", "image.tag=dev"}));
  if (!onPath("kubectl")) {
    std::cout << "kubectl is not on PATH: rendering the kustomization's resources and images"
              << std::endl;
    return kustomizeWithoutKubectl(SMIK_SOURCE_DIR "/daemonset");
  }
  return yamlDocuments(command({"kubectl", "kustomize", SMIK_SOURCE_DIR "/daemonset"}));
}

const json* find(const std::vector<json>& docs, const std::string& kind, const std::string& name) {
  for (const auto& d : docs)
    if (d.value("kind", "") == kind && d["metadata"].value("name", "") == name) return &d;
  return nullptr;
}

// ---- the test ----------------------------------------------------------------

class Install : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    for (const char* tool : {"podman", "runc", "mmdebstrap", "catatonit", "bpftool", "curl"})
      if (!onPath(tool)) {
        setup_error_ = std::string(tool) + " not found: `.ci/deps` installs it";
        return;
      }
    Runtime::removeStale();
    prefix_ = smik::testbed::runPrefix();
    runtime_ = std::make_unique<Runtime>("/var/tmp/" + prefix_ + "-smik-install");
    const auto t0 = std::chrono::steady_clock::now();
    // CI builds the image beside the other tests (tests/install/image-archive.sh,
    // the same images.sh) and hands it over as an archive; otherwise it is
    // built here.
    const char* archive = std::getenv("SMIK_INSTALL_IMAGE_ARCHIVE");
    try {
      if (archive && *archive) {
        std::cout << "loading " << archive << ": "
                  << run({"podman", "load", "--quiet", "--input", archive}, 600);
        podman({"image", "inspect", "--format", "{{.Id}}", kImage});  // throws if it is not there
      } else {
        // TMPDIR: buildah's and mmdebstrap's scratch go with the run's storage.
        std::cout << run({"env", "TMPDIR=" + runtime_->dir() + "/tmp",
                          SMIK_SOURCE_DIR "/tests/install/images.sh", SMIK_SOURCE_DIR, kImage},
                         3600);
      }
    } catch (const std::exception& e) {
      setup_error_ = std::string(archive && *archive ? "loading" : "building") + " the image: " + e.what();
      return;
    }
    const auto s = std::chrono::duration_cast<std::chrono::seconds>(
        std::chrono::steady_clock::now() - t0);
    std::cout << (archive && *archive ? "smik-agent image loaded: " : "base images and smik-agent image: ")
              << s.count() << " s" << std::endl;
  }
  static void TearDownTestSuite() { runtime_.reset(); }

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "KERNEL TEST SKIPPED: the install test needs root";
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    if (GetParam() == "helm" && !onPath("helm")) GTEST_SKIP() << "helm is not on PATH";
    // The install's node paths and ports are fixed: one install per machine
    // at a time (a lock on /run itself leaves no file behind).
    lock_fd_.reset(::open("/run", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_EQ(::flock(lock_fd_.get(), LOCK_EX), 0);

    docs_ = render(GetParam());
    const json* ds = find(docs_, "DaemonSet", "smik-agent");
    ASSERT_NE(ds, nullptr) << "the install renders no DaemonSet smik-agent";
    ds_ = *ds;
    if (GetParam() == "kustomize" && onPath("kubectl")) {
      // What machines without kubectl run is what kubectl renders.
      auto plain = kustomizeWithoutKubectl(SMIK_SOURCE_DIR "/daemonset");
      const json* same = find(plain, "DaemonSet", "smik-agent");
      ASSERT_NE(same, nullptr);
      EXPECT_EQ((*same)["spec"]["template"], ds_["spec"]["template"]);
    }
    const json tmpl = json::object({{"spec", ds_["spec"]["template"]["spec"]}});
    const json agent = container(tmpl, "agent");
    pin_dir_ = argValue(agent, "--pin-dir");
    cgroup_dir_ = argValue(agent, "--cgroup");
    ASSERT_FALSE(pin_dir_.empty());
    ASSERT_FALSE(fs::exists(pin_dir_)) << pin_dir_ << " exists: smik is installed on this machine";
    ASSERT_FALSE(isMountPoint(cgroup_dir_)) << cgroup_dir_ << " is mounted already";
    run_dir_ = fs::path(cgroup_dir_).parent_path().string();
    made_run_dir_ = !fs::exists(run_dir_);
    // Bidirectional mounts reach the host only from a shared mount, as a
    // Kubernetes node's are (systemd makes / shared); this machine's root
    // may be private. A shared bind of the install's directory is enough.
    fs::create_directories(run_dir_);
    if (!isMountPoint(run_dir_)) {
      ASSERT_NO_THROW(run({"mount", "--bind", run_dir_, run_dir_}, 10));
      bound_run_dir_ = true;
    }
    ASSERT_NO_THROW(run({"mount", "--make-shared", run_dir_}, 10));

    bed_ = std::make_unique<TestBed>();
    node_.name = prefix_ + "-node";
    node_.dir = runtime_->dir() + "/" + GetParam();
    FakeCluster::Options o;
    o.tls = true;
    o.tls_dir = SMIK_KUBE_FIXTURES_DIR "/tls";
    cluster_ = std::make_unique<FakeCluster>(o);
    node_.api_host = "127.0.0.1";
    node_.api_port = cluster_->port();
    node_.token = o.token;
    node_.ca_file = o.tls_dir + "/ca.crt";
  }

  void TearDown() override {
    // Whatever a failed step left: the pods, then what the agent pinned and
    // mounted on the node (the image's own --uninstall).
    for (const auto& name : played_) tryRun({"podman", "pod", "rm", "--force", name}, 120);
    if (!pin_dir_.empty() && fs::exists(pin_dir_) && runtime_)
      tryRun({"podman", "run", "--rm", "--privileged", "--network=host", "-v",
              "/sys/fs/bpf:/sys/fs/bpf", kImage, "--uninstall", "--pin-dir=" + pin_dir_}, 120);
    if (!cgroup_dir_.empty() && isMountPoint(cgroup_dir_)) tryRun({"umount", cgroup_dir_}, 10);
    if (bound_run_dir_) tryRun({"umount", run_dir_}, 10);
    if (!run_dir_.empty()) {
      std::error_code ec;
      fs::remove(run_dir_ + "/agent.sock", ec);
      if (made_run_dir_) fs::remove_all(run_dir_, ec);
    }
    cluster_.reset();
    bed_.reset();
    lock_fd_.reset();  // last: the next install may start
  }

  // The Secrets the pod mounts: gen-certs.sh's for the plain install (as
  // its README step makes them), the chart's own for Helm.
  Objects objects() {
    Objects objs;
    std::vector<json> all = docs_;
    if (GetParam() == "kustomize") {
      certs_ = node_.dir + "/certs";
      auto secrets = yamlDocuments(run({SMIK_SOURCE_DIR "/daemonset/gen-certs.sh", "--dry-run",
                                        "--out", certs_, "-n", kNamespace}, 120));
      all.insert(all.end(), secrets.begin(), secrets.end());
    }
    for (const auto& d : all)
      if (d.value("kind", "") == "Secret" || d.value("kind", "") == "ConfigMap")
        objs[d["kind"].get<std::string>() + "/" + d["metadata"]["name"].get<std::string>()] = d;
    return objs;
  }

  // Writes the Pod and the ConfigMaps it reads and plays them.
  void play(const json& pod) {
    const std::string name = pod["metadata"]["name"];
    const std::string file = node_.dir + "/" + name + ".yaml";
    writeFile(file, pod.dump(2));
    std::vector<std::string> argv = {"podman", "kube", "play"};
    for (const auto& [key, obj] : objects_)
      if (obj["kind"] == "ConfigMap") {
        const std::string cm = node_.dir + "/" + obj["metadata"]["name"].get<std::string>() + ".cm.yaml";
        writeFile(cm, obj.dump(2));
        argv.insert(argv.end(), {"--configmap", cm});
      }
    argv.push_back(file);
    if (std::find(played_.begin(), played_.end(), name) == played_.end()) played_.push_back(name);
    run(argv, 300);
  }
  void down(const json& pod) {
    run({"podman", "kube", "down", node_.dir + "/" + pod["metadata"]["name"].get<std::string>() +
                                          ".yaml"}, 120);
  }
  std::string logs(const std::string& pod_name) {
    std::string out;
    for (const char* c : {"mount-bpf-fs", "mount-cgroup", "agent"}) {
      out += std::string("--- ") + c + "\n";
      try {
        out += run({"podman", "logs", pod_name + "-" + c}, 30);
      } catch (const std::exception& e) {
        out += e.what();
      }
    }
    return out;
  }

  // GET the readiness probe's URL, as the kubelet does (host network).
  int probe(const json& c, const char* which) {
    const json& get = c.at(which).at("httpGet");
    EXPECT_EQ(get.value("host", "127.0.0.1"), "127.0.0.1");
    return httpGet(portOf(c, get["port"]), get["path"]).first;
  }

  // TrafficMetrics through the agent's API port, as the aggregator asks:
  // its client certificate, X-Remote-User, the Service's name checked
  // against the API CA (curl's --resolve: no DNS here).
  std::pair<int, std::string> aggregated(const json& c, const std::string& user,
                                         const std::string& path) {
    const std::string host = std::string("smik-api.") + kNamespace + ".svc";
    const int port = portOf(c, "api");
    const std::string ca = node_.dir + "/pods/" + agent_name_ + "/volumes/api-tls/ca.crt";
    auto r = bed_->run({"curl", "-sS", "--max-time", "5", "--cacert", ca, "--cert",
                        SMIK_KUBE_FIXTURES_DIR "/tls/client.crt", "--key",
                        SMIK_KUBE_FIXTURES_DIR "/tls/client.key", "--resolve",
                        host + ":" + std::to_string(port) + ":127.0.0.1", "-H",
                        "X-Remote-User: " + user, "-w", "\n%{http_code}",
                        "https://" + host + ":" + std::to_string(port) + path},
                       10000);
    const auto nl = r.output.rfind('\n');
    if (nl == std::string::npos) return {0, r.output};
    return {std::atoi(r.output.substr(nl + 1).c_str()), r.output.substr(0, nl)};
  }

  // What a denied connect looks like to the client under the installed
  // ConfigMap: refused (a RST, `reject`, the default) or a timeout (`drop`).
  std::string deniedAs() const {
    auto it = objects_.find("ConfigMap/smik-config");
    if (it == objects_.end()) ADD_FAILURE() << "the install renders no ConfigMap smik-config";
    const std::string mode =
        it == objects_.end() ? "" : it->second["data"].value("SMIK_DENY_RESPONSE", "reject");
    return mode == "drop" ? "timeout" : "refused";
  }

  std::string tcp(Pod& from, Pod& to, int port) {
    auto r = bed_->run(from, {SMIK_TESTPEER, "tcp", to.ip(), std::to_string(port), "--timeout-ms",
                              "300"},
                       5000);
    return r.output.substr(0, r.output.find_first_of(" \n"));
  }
  void expectTcp(Pod& from, Pod& to, int port, const std::string& want, int within_ms = 3000) {
    std::string got;
    EXPECT_TRUE(eventually([&] { return (got = tcp(from, to, port)) == want; }, within_ms))
        << from.name() << " -> " << to.name() << ":" << port << ": want " << want << ", got " << got;
  }

  static inline std::string prefix_;
  static inline std::unique_ptr<Runtime> runtime_;
  static inline std::string setup_error_;

  UniqueFd lock_fd_;
  std::vector<json> docs_;
  json ds_;
  Objects objects_;
  std::string pin_dir_, cgroup_dir_, certs_, agent_name_;
  std::string run_dir_;  // the hostPath /run/smik: the socket, the cgroup2 mount
  bool made_run_dir_ = false, bound_run_dir_ = false;
  Node node_;
  std::unique_ptr<TestBed> bed_;
  std::unique_ptr<FakeCluster> cluster_;
  std::vector<std::string> played_;
};

TEST_P(Install, PodTemplateEnforcesRestartsAndUninstalls) {
  objects_ = objects();
  // The cluster: meshed namespace "app", client may reach server:8080 only;
  // the aggregator's client CA; alice may read app's metrics.
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  Pod& intruder = bed_->addPod("intruder", bed_->nextIp());
  cluster_->applyYaml(ns("app", true) + pod("app", "client", "client", client.ip(), node_.name) +
                      pod("app", "server", "server", server.ip(), node_.name) +
                      pod("app", "intruder", "intruder", intruder.ip(), node_.name) +
                      tcpRoute("app", "web", "[8080]") +
                      trafficTarget("app", "client-to-server", "app", "server",
                                    rule("TCPRoute", "web"), "app", "client"));
  cluster_->apply({{"apiVersion", "v1"},
                   {"kind", "ConfigMap"},
                   {"metadata",
                    {{"name", "extension-apiserver-authentication"}, {"namespace", "kube-system"}}},
                   {"data",
                    {{"requestheader-client-ca-file", readFile(node_.ca_file)},
                     {"requestheader-allowed-names", "[\"smik-agent\"]"}}}});
  cluster_->setAuthorizer([](const json& spec) {
    return spec["user"] == "alice" && spec["resourceAttributes"]["namespace"] == "app";
  });
  // Every port a denial is checked on has a listener, so a refused connect
  // there can only be the policy's answer (the ConfigMap's deny response).
  Proc srv = bed_->spawn(server, {SMIK_TESTPEER, "serve", "--id", "server", "--tcp", "8080,9090"});
  Proc cli = bed_->spawn(client, {SMIK_TESTPEER, "serve", "--id", "client", "--tcp", "8080"});
  ASSERT_TRUE(srv.waitFor("ready\n", 5000));
  ASSERT_TRUE(cli.waitFor("ready\n", 5000));
  EXPECT_EQ(tcp(client, server, 9090), "ok") << "the test bed itself does not pass traffic";
  EXPECT_EQ(tcp(server, client, 8080), "ok") << "the test bed itself does not pass traffic";
  const std::string denied_as = deniedAs();

  // ---- install: the DaemonSet's pod on this node
  agent_name_ = prefix_ + "-" + GetParam() + "-agent";
  const json agent_pod = kubeletPod(ds_, agent_name_, node_, objects_);
  // Probes and ports as the DaemonSet spec names them.
  const json agent = container(json::object({{"spec", ds_["spec"]["template"]["spec"]}}), "agent");
  ASSERT_NO_THROW(play(agent_pod));
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return probe(agent, "readinessProbe") == 200; }, 120000))
      << "readinessProbe never passed\n" << logs(agent_name_);
  std::cout << "agent pod ready after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - t0).count()
            << " ms" << std::endl;
  EXPECT_EQ(probe(agent, "livenessProbe"), 200);
  EXPECT_EQ(probe(agent, "startupProbe"), 200);

  // Exactly the capabilities the spec adds: not privileged, and nothing the
  // runtime would have to grant beyond them.
  const pid_t pid = std::atoi(
      podman({"inspect", "--format", "{{.State.Pid}}", agent_name_ + "-agent"}).c_str());
  std::set<std::string> want;
  for (const auto& c : agent["securityContext"]["capabilities"]["add"]) want.insert(c);
  EXPECT_EQ(capabilitiesOf(pid), want);

  // ---- enforcement from the SMI objects in the API
  expectTcp(client, server, 8080, "ok");
  expectTcp(client, server, 9090, denied_as);
  expectTcp(intruder, server, 8080, denied_as);
  expectTcp(server, client, 8080, denied_as);
  // A policy change through the API.
  cluster_->applyYaml(tcpRoute("app", "web", "[8080, 9090]"));
  expectTcp(client, server, 9090, "ok");
  cluster_->remove("TrafficTarget", "app", "client-to-server");
  expectTcp(client, server, 8080, denied_as);
  expectTcp(client, server, 9090, denied_as);
  cluster_->applyYaml(tcpRoute("app", "web", "[8080]") +
                      trafficTarget("app", "client-to-server", "app", "server",
                                    rule("TCPRoute", "web"), "app", "client"));
  expectTcp(client, server, 8080, "ok");
  expectTcp(client, server, 9090, denied_as);

  // ---- the aggregated API on the agent's port, with gen-certs.sh's certificate
  {
    std::pair<int, std::string> r;
    EXPECT_TRUE(eventually(
        [&] {
          r = aggregated(agent, "alice", "/apis/metrics.smi-spec.io/v1alpha1/namespaces/app/pods/server");
          return r.first == 200;
        },
        10000))
        << r.first << " " << r.second << logs(agent_name_);
    if (r.first == 200) {
      EXPECT_EQ(json::parse(r.second)["kind"], "TrafficMetrics") << r.second;
    }
    EXPECT_EQ(aggregated(agent, "alice", "/apis/metrics.smi-spec.io/v1alpha1").first, 200);
    EXPECT_EQ(aggregated(agent, "mallory", "/apis/metrics.smi-spec.io/v1alpha1/namespaces/app/pods")
                  .first,
              403);
  }

  // ---- podman kube down: the pinned programs keep enforcing, the pod comes back
  const std::vector<std::string> devs = {client.hostIf(), server.hostIf(), intruder.hostIf()};
  const std::string cgroup_root = smik::testbed::cgroup2Mount();
  const std::set<int> programs = programsOn(devs, cgroup_root);
  EXPECT_GE(programs.size(), 3u) << "tc on the veths and the socket programs";
  // Across the restart: a connection held open, and an intruder retrying.
  Proc hold = bed_->spawn(client, {SMIK_TESTPEER, "hold", server.ip(), "8080", "--seconds", "15"});
  Proc denied = bed_->spawn(intruder, {SMIK_TESTPEER, "tcp", server.ip(), "8080", "--count", "60",
                                       "--timeout-ms", "200"});
  ASSERT_NO_THROW(down(agent_pod));
  EXPECT_EQ(httpGet(portOf(agent, "http"), "/readyz").first, 0) << "the agent is still up";
  expectTcp(client, server, 8080, "ok", 500);
  expectTcp(client, server, 9090, denied_as, 500);
  expectTcp(server, client, 8080, denied_as, 500);
  ASSERT_NO_THROW(play(agent_pod));
  ASSERT_TRUE(eventually([&] { return probe(agent, "readinessProbe") == 200; }, 120000))
      << logs(agent_name_);
  EXPECT_EQ(hold.wait(30000), 0) << "the held connection broke: " << hold.output();
  denied.wait(30000);
  EXPECT_EQ(denied.output().find("ok"), std::string::npos) << denied.output();
  EXPECT_NE(denied.output().find(denied_as), std::string::npos) << denied.output();
  expectTcp(client, server, 8080, "ok");
  expectTcp(client, server, 9090, denied_as);
  ASSERT_NO_THROW(down(agent_pod));

  // ---- uninstall.yaml's pod, played the same way
  auto uninstall_docs = yamlDocuments(readFile(SMIK_SOURCE_DIR "/daemonset/uninstall.yaml"));
  const json* uds = find(uninstall_docs, "DaemonSet", "smik-uninstall");
  ASSERT_NE(uds, nullptr);
  json uninstall_ds = *uds;
  if (GetParam() == "helm")  // the image users put there
    for (const char* list : {"initContainers", "containers"})
      for (auto& c : uninstall_ds["spec"]["template"]["spec"][list]) c["image"] = kImage;
  const std::string uninstall_name = prefix_ + "-" + GetParam() + "-uninstall";
  const json uninstall_pod = kubeletPod(uninstall_ds, uninstall_name, node_, objects_);
  ASSERT_NO_THROW(play(uninstall_pod));
  // Init containers ran (and succeeded) once the pod's main container runs.
  EXPECT_TRUE(eventually(
      [&] {
        try {
          return podman({"inspect", "--format", "{{.State.Status}}", uninstall_name + "-done"}) ==
                 "running\n";
        } catch (const std::exception&) {
          return false;  // not made yet: init containers still running
        }
      },
      30000));
  EXPECT_FALSE(fs::exists(pin_dir_)) << "uninstall left " << pin_dir_;
  EXPECT_FALSE(isMountPoint(cgroup_dir_)) << "uninstall left " << cgroup_dir_ << " mounted";
  EXPECT_FALSE(fs::exists(fs::path(cgroup_dir_).parent_path() / "agent.sock"));
  EXPECT_TRUE(programsOn(devs, cgroup_root).empty());
  for (int id : programs) EXPECT_FALSE(programExists(id)) << "program " << id << " still loaded";
  // Plain networking again: what was denied connects, both ways.
  expectTcp(client, server, 9090, "ok");
  expectTcp(server, client, 8080, "ok");
  ASSERT_NO_THROW(down(uninstall_pod));
}

INSTANTIATE_TEST_SUITE_P(, Install, ::testing::Values("kustomize", "helm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace smik::install
