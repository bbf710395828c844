// Throw-away TLS certificates for tests of the peer API, made with the
// openssl CLI in a directory that is removed again with the object.
#pragma once

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace smik::testbed {

class CertDir {
 public:
  // A fresh directory "<tmp>/<tag>-XXXXXX".
  explicit CertDir(const std::string& tag) {
    std::string tmpl = (std::filesystem::temp_directory_path() / (tag + "-XXXXXX")).string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp " + tmpl);
    dir_ = tmpl;
    std::ofstream(dir_ + "/openssl.cnf") << "[req]\ndistinguished_name = dn\nprompt = no\n"
                                            "[dn]\nCN = smik-test\n"
                                            "[ca]\nbasicConstraints = critical,CA:TRUE\n"
                                            "keyUsage = critical,keyCertSign,cRLSign\n"
                                            "subjectKeyIdentifier = hash\n";
  }
  ~CertDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  CertDir(const CertDir&) = delete;
  CertDir& operator=(const CertDir&) = delete;

  const std::string& dir() const { return dir_; }
  std::string crt(const std::string& name) const { return dir_ + "/" + name + ".crt"; }
  std::string key(const std::string& name) const { return dir_ + "/" + name + ".key"; }

  // A self-signed CA.
  void makeCa(const std::string& name) {
    openssl({"req", "-x509", "-config", cnf(), "-extensions", "ca", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key(name), "-out", crt(name),
             "-days", "2", "-subj", "/CN=" + name});
  }

  // A certificate for both TLS ends (serverAuth, clientAuth) with the DNS
  // SAN dns, signed by ca.
  void makeCert(const std::string& name, const std::string& ca, const std::string& dns) {
    const std::string ext = dir_ + "/" + name + ".ext";
    std::ofstream(ext) << "[peer]\nbasicConstraints = CA:FALSE\n"
                          "keyUsage = critical,digitalSignature,keyEncipherment\n"
                          "extendedKeyUsage = serverAuth,clientAuth\n"
                          "subjectAltName = DNS:" << dns << "\n";
    const std::string csr = dir_ + "/" + name + ".csr";
    openssl({"req", "-new", "-config", cnf(), "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key(name), "-out", csr, "-subj",
             "/CN=" + name});
    openssl({"x509", "-req", "-in", csr, "-CA", crt(ca), "-CAkey", key(ca), "-set_serial",
             std::to_string(++serial_), "-days", "2", "-extfile", ext, "-extensions", "peer",
             "-out", crt(name)});
  }

 private:
  std::string cnf() const { return dir_ + "/openssl.cnf"; }

  static void openssl(std::vector<std::string> args) {
    args.insert(args.begin(), "openssl");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, "openssl", &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    int st = 0;
    if (rc == 0)
      while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
    if (rc != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::string cmd;
      for (const auto& a : args) cmd += " " + a;
      throw std::runtime_error("failed:" + cmd + (rc != 0 ? " (is openssl installed?)" : ""));
    }
  }

  std::string dir_;
  int serial_ = 0;
};

}  // namespace smik::testbed
