// tests/server/pki.hpp — the test PKI: CA, server and client certificates made at test time with
// the openssl CLI (no key is committed), for the server's TLS tests (test_tls.cpp) and the
// client's (tests/client/test_client.cpp). Without the CLI these tests fail; they never skip.
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>

#include <doctest/doctest.h>

#ifndef LARIV_OPENSSL_CLI
#define LARIV_OPENSSL_CLI "openssl"
#endif

namespace lariv::test {

/// The test PKI, made once per process in a temporary directory (removed at exit):
///   ca            "Lariv Test CA", signs everything below but `stranger`
///   other-ca      "Other Test CA", signs `stranger`
///   server-a/-b   larivd-A (serial A1) and larivd-B (serial B2), for localhost and 127.0.0.1
///   client        a client certificate from ca (serial C1)
///   stranger      a client certificate from other-ca (serial D1)
///   expired       a client certificate from ca, valid 2020-01-01 .. 2020-01-02 only
///   expired-srv   a server certificate from ca, expired the same way
///   garbage.pem   a file that is no PEM at all
class pki {
public:
    pki() {
        char tmpl[] = "/tmp/lariv_tls_XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        dir_ = tmpl;
        const std::string cli = LARIV_OPENSSL_CLI;
        const int found = std::system(("'" + cli + "' version >/dev/null 2>&1").c_str());
        REQUIRE_MESSAGE(found == 0, "the TLS tests need the openssl CLI ('"
                                        << cli << "'; scripts/deps.sh test installs it): not found");
        std::ofstream(path("make.sh")) << R"(set -eu
O=$1
cd "$2"
ca() {  # name CN
  "$O" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.pem" \
    -days 30 -subj "/CN=$2"
}
csr() {  # name CN
  "$O" req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" \
    -subj "/CN=$2"
}
leaf() {  # name CN ca serial extensions
  csr "$1" "$2"
  "$O" x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -set_serial "$4" -days 30 \
    -extfile "$5.ext" -out "$1.pem"
}
expired() {  # name CN extensions: valid for one day in 2020 (openssl ca takes explicit dates)
  csr "$1" "$2"
  "$O" ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in "$1.csr" -out "$1.pem" -notext \
    -startdate 20200101000000Z -enddate 20200102000000Z -extfile "$3.ext"
}
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
printf '[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial.txt\n' > ca.cnf
printf 'default_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n' >> ca.cnf
: > index.txt
echo E0 > serial.txt
ca ca "Lariv Test CA"
ca other-ca "Other Test CA"
leaf server-a larivd-A ca 0xA1 server
leaf server-b larivd-B ca 0xB2 server
leaf client "test client" ca 0xC1 client
leaf stranger stranger other-ca 0xD1 client
expired expired "expired client" client
expired expired-srv larivd-expired server
echo "not a certificate" > garbage.pem
)";
        const std::string cmd = "sh '" + path("make.sh") + "' '" + cli + "' '" + dir_ + "' >'" +
                                path("make.log") + "' 2>&1";
        const int rc = std::system(cmd.c_str());
        std::ifstream log(path("make.log"));
        const std::string out((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
        REQUIRE_MESSAGE(rc == 0, "making the test certificates failed:\n" << out);
    }
    ~pki() {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    pki(const pki&) = delete;
    pki& operator=(const pki&) = delete;

    [[nodiscard]] std::string path(const std::string& name) const { return dir_ + "/" + name; }
    /// Copies `from` (a name in the PKI directory) to `to` (ditto), replacing it.
    void copy(const std::string& from, const std::string& to) const {
        std::filesystem::copy_file(path(from), path(to), std::filesystem::copy_options::overwrite_existing);
    }

private:
    std::string dir_;
};

/// The process-wide PKI, made on first use.
inline const pki& test_pki() {
    static const pki p;
    return p;
}

}  // namespace lariv::test
