// Kubeconfig and in-cluster configuration, and the rotating token source.
#include "agent/source/kube_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>

namespace smik::kube {
namespace {

namespace fs = std::filesystem;
const std::string kDir = SMIK_KUBE_FIXTURES_DIR;

// A scratch directory removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("smik-kube-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() {
    static int n = 0;
    return n;
  }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
  }
};

TEST(KubeConfig, CurrentContextWithTokenAndRelativeCa) {
  auto r = loadKubeconfigFile(kDir + "/kubeconfig-token.yaml");
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_EQ(r.config->server, "https://dev.example:6443");  // trailing slash dropped
  EXPECT_EQ(r.config->ca_file, kDir + "/certs/ca.crt");
  EXPECT_EQ(r.config->token, "dev-token-123");
  EXPECT_EQ(r.config->ns, "mesh");
  EXPECT_FALSE(r.config->insecure_skip_tls_verify);
}

TEST(KubeConfig, NamedContextWithInsecureAndTokenFile) {
  auto r = loadKubeconfigFile(kDir + "/kubeconfig-token.yaml", "prod");
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_EQ(r.config->server, "https://10.0.0.1:443");
  EXPECT_TRUE(r.config->insecure_skip_tls_verify);
  EXPECT_EQ(r.config->token_file, "/abs/token");
  EXPECT_TRUE(r.config->ns.empty());
}

TEST(KubeConfig, InlineDataIsDecoded) {
  auto r = loadKubeconfigFile(kDir + "/kubeconfig-data.yaml");
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_EQ(r.config->ca_data, "-----BEGIN CERTIFICATE-----\nFAKECA\n-----END CERTIFICATE-----\n");
  EXPECT_EQ(r.config->client_cert_data,
            "-----BEGIN CERTIFICATE-----\nFAKECERT\n-----END CERTIFICATE-----\n");
  EXPECT_EQ(r.config->client_key_data,
            "-----BEGIN PRIVATE KEY-----\nFAKEKEY\n-----END PRIVATE KEY-----\n");
  EXPECT_TRUE(r.config->ca_file.empty());
}

TEST(KubeConfig, CertificateFilesAndTokenFileAreRelativeToTheKubeconfig) {
  auto r = loadKubeconfigFile(kDir + "/kubeconfig-certfiles.yaml");
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_EQ(r.config->ca_file, kDir + "/ca.pem");
  EXPECT_EQ(r.config->client_cert_file, kDir + "/pki/client.crt");
  EXPECT_EQ(r.config->client_key_file, kDir + "/pki/client.key");
  EXPECT_EQ(r.config->token_file, kDir + "/token.txt");
  EXPECT_EQ(r.config->tls_server_name, "kubernetes.default");
  EXPECT_EQ(r.config->proxy_url, "http://proxy.example:3128");
}

TEST(KubeConfig, KubeconfigListMergesFirstWins) {
  const std::string list = kDir + "/missing.yaml:" + kDir + "/kubeconfig-token.yaml:" + kDir +
                           "/kubeconfig-override.yaml";
  auto r = loadKubeconfig(list);
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_EQ(r.config->server, "https://dev.example:6443");  // first current-context, first cluster
  auto other = loadKubeconfig(list, "other");
  ASSERT_TRUE(other.config) << other.error;
  EXPECT_EQ(other.config->server, "https://other.example");
  EXPECT_EQ(other.config->token, "other-token");
}

TEST(KubeConfig, ErrorsNameTheProblem) {
  auto missing_ctx = loadKubeconfigFile(kDir + "/kubeconfig-token.yaml", "nope");
  EXPECT_FALSE(missing_ctx.config);
  EXPECT_NE(missing_ctx.error.find("context \"nope\" not found"), std::string::npos);

  auto exec = loadKubeconfigFile(kDir + "/kubeconfig-exec.yaml");
  EXPECT_FALSE(exec.config);
  EXPECT_NE(exec.error.find("exec is not supported"), std::string::npos) << exec.error;

  auto bad = loadKubeconfigFile(kDir + "/kubeconfig-bad-data.yaml");
  EXPECT_FALSE(bad.config);
  EXPECT_NE(bad.error.find("certificate-authority-data is not valid base64"), std::string::npos)
      << bad.error;

  auto none = loadKubeconfigFile(kDir + "/does-not-exist.yaml");
  EXPECT_FALSE(none.config);

  TempDir t;
  t.write("broken.yaml", "clusters: [unclosed\n");
  EXPECT_FALSE(loadKubeconfigFile((t.path / "broken.yaml").string()).config);
  t.write("list.yaml", "- a\n- b\n");
  EXPECT_FALSE(loadKubeconfigFile((t.path / "list.yaml").string()).config);
  t.write("halfcert.yaml",
          "current-context: c\nclusters: [{name: c, cluster: {server: https://x}}]\n"
          "users: [{name: u, user: {client-certificate: a.crt}}]\n"
          "contexts: [{name: c, context: {cluster: c, user: u}}]\n");
  auto half = loadKubeconfigFile((t.path / "halfcert.yaml").string());
  EXPECT_FALSE(half.config);
  EXPECT_NE(half.error.find("certificate and key"), std::string::npos) << half.error;
}

TEST(KubeConfig, Base64) {
  EXPECT_EQ(base64Decode("aGVsbG8="), "hello");
  EXPECT_EQ(base64Decode("aGVsbG8"), "hello");  // padding optional
  EXPECT_EQ(base64Decode("aGVs\nbG8=\n"), "hello");
  EXPECT_EQ(base64Decode(""), "");
  EXPECT_FALSE(base64Decode("aGVs*G8="));
  EXPECT_FALSE(base64Decode("a"));
  EXPECT_FALSE(base64Decode("aG=Vs"));
}

std::function<const char*(const char*)> env(std::map<std::string, std::string> vars) {
  auto owned = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [owned](const char* name) -> const char* {
    auto it = owned->find(name);
    return it == owned->end() ? nullptr : it->second.c_str();
  };
}

TEST(InCluster, ServiceAccountFiles) {
  TempDir sa;
  sa.write("token", "sa-token\n");
  sa.write("ca.crt", "PEM");
  sa.write("namespace", "smik-system\n");
  auto r = loadInCluster(
      env({{"KUBERNETES_SERVICE_HOST", "10.96.0.1"}, {"KUBERNETES_SERVICE_PORT", "443"}}),
      sa.path.string());
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_EQ(r.config->server, "https://10.96.0.1:443");
  EXPECT_EQ(r.config->token_file, (sa.path / "token").string());
  EXPECT_EQ(r.config->ca_file, (sa.path / "ca.crt").string());
  EXPECT_EQ(r.config->ns, "smik-system");
  EXPECT_FALSE(r.config->insecure_skip_tls_verify);
  TokenSource tokens(*r.config);
  EXPECT_EQ(tokens.token(), "sa-token");  // newline trimmed
}

TEST(InCluster, Ipv6HostGetsBrackets) {
  TempDir sa;
  sa.write("token", "t");
  sa.write("ca.crt", "PEM");
  auto r = loadInCluster(
      env({{"KUBERNETES_SERVICE_HOST", "fd00::1"}, {"KUBERNETES_SERVICE_PORT", "443"}}),
      sa.path.string());
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_EQ(r.config->server, "https://[fd00::1]:443");
}

TEST(InCluster, NotInClusterOrMissingFiles) {
  TempDir sa;
  EXPECT_FALSE(loadInCluster(env({}), sa.path.string()).config);
  const auto in_pod =
      env({{"KUBERNETES_SERVICE_HOST", "10.96.0.1"}, {"KUBERNETES_SERVICE_PORT", "443"}});
  auto no_token = loadInCluster(in_pod, sa.path.string());
  EXPECT_FALSE(no_token.config);
  EXPECT_NE(no_token.error.find("token"), std::string::npos);
  sa.write("token", "t");
  EXPECT_FALSE(loadInCluster(in_pod, sa.path.string()).config);  // no ca.crt
}

TEST(TokenSource, FileTokenIsReReadPeriodicallyAndOnInvalidate) {
  TempDir t;
  const std::string file = (t.path / "token").string();
  t.write("token", "one");
  TokenSource tokens("", file, std::chrono::milliseconds(200));
  EXPECT_EQ(tokens.token(), "one");
  t.write("token", "two");
  EXPECT_EQ(tokens.token(), "one");  // cached within the period
  tokens.invalidate();
  EXPECT_EQ(tokens.token(), "two");  // a 401 forces a re-read
  t.write("token", "three");
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  EXPECT_EQ(tokens.token(), "three");  // the period passed
  fs::remove(file);
  tokens.invalidate();
  EXPECT_EQ(tokens.token(), "three");  // a vanished file keeps the last token
}

TEST(TokenSource, LiteralTokenAndFileFallback) {
  TokenSource literal("abc", "");
  EXPECT_EQ(literal.token(), "abc");
  EXPECT_FALSE(literal.refreshable());
  TokenSource unreadable("fallback", "/nonexistent/token");
  EXPECT_EQ(unreadable.token(), "fallback");
  EXPECT_TRUE(unreadable.refreshable());
}

}  // namespace
}  // namespace smik::kube
