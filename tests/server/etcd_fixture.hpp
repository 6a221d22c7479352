// tests/server/etcd_fixture.hpp — a throw-away etcd member for tests: found on PATH (a clear error if
// it is absent: scripts/deps.sh test installs etcd-server), on two ephemeral loopback ports (client
// and peer), with its data dir in a fresh temp dir, started and waited for until GET /health answers
// {"health":"true"}. The destructor kills it and removes the temp dir; stop() ends it with SIGTERM,
// restart() starts it again on the same ports and data dir (its keys and leases survive).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace lariv::test {

class etcd_process {
public:
    /// Starts etcd and waits until it answers (throws std::runtime_error, with the log's tail, if
    /// etcd is not on PATH, exits, or does not answer within `ready_timeout`).
    explicit etcd_process(std::chrono::milliseconds ready_timeout = std::chrono::seconds(20))
        : binary_(find_etcd()), ready_timeout_(ready_timeout) {
        char tmpl[] = "/tmp/lariv-etcd-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) {
            throw std::runtime_error("etcd_process: mkdtemp failed");
        }
        dir_ = tmpl;
        pick_ports();
        start();
    }
    ~etcd_process() {
        kill();
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    etcd_process(const etcd_process&) = delete;
    etcd_process& operator=(const etcd_process&) = delete;

    /// "http://127.0.0.1:PORT"
    [[nodiscard]] std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(client_port_); }
    [[nodiscard]] std::uint16_t client_port() const { return client_port_; }
    [[nodiscard]] std::uint16_t peer_port() const { return peer_port_; }
    [[nodiscard]] const std::string& data_dir_parent() const { return dir_; }
    [[nodiscard]] bool running() const { return pid_ > 0; }

    /// SIGTERM and wait for it to exit (SIGKILL after 10 s).
    void stop() { end(SIGTERM); }
    /// SIGKILL and wait.
    void kill() { end(SIGKILL); }
    /// stop() if running, then start again on the same ports and data dir and wait until it answers.
    void restart() {
        stop();
        start();
    }

    /// The last `n` bytes of etcd's log (for failure messages).
    [[nodiscard]] std::string log_tail(std::size_t n = 2000) const {
        std::ifstream f(dir_ + "/etcd.log");
        std::stringstream ss;
        ss << f.rdbuf();
        const std::string s = ss.str();
        return s.size() > n ? s.substr(s.size() - n) : s;
    }

private:
    static std::string find_etcd() {
        const char* path = std::getenv("PATH");
        std::string p = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
        std::size_t start = 0;
        while (start <= p.size()) {
            const auto colon = p.find(':', start);
            std::string dir = p.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
            if (dir.empty()) {
                dir = ".";
            }
            const std::string cand = dir + "/etcd";
            if (::access(cand.c_str(), X_OK) == 0) {
                return cand;
            }
            if (colon == std::string::npos) {
                break;
            }
            start = colon + 1;
        }
        throw std::runtime_error(
            "etcd_process: no `etcd` executable on PATH; these tests need a real etcd 3.4 "
            "(Debian: apt-get install etcd-server etcd-client, or scripts/deps.sh test)");
    }

    /// Two distinct loopback ports that were free a moment ago (both bound at once, then closed).
    void pick_ports() {
        int fds[2] = {-1, -1};
        std::uint16_t ports[2] = {0, 0};
        for (int i = 0; i < 2; ++i) {
            fds[i] = ::socket(AF_INET, SOCK_STREAM, 0);
            sockaddr_in sa{};
            sa.sin_family = AF_INET;
            sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (fds[i] < 0 || ::bind(fds[i], reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
                throw std::runtime_error("etcd_process: cannot bind a loopback port");
            }
            socklen_t len = sizeof sa;
            ::getsockname(fds[i], reinterpret_cast<sockaddr*>(&sa), &len);
            ports[i] = ntohs(sa.sin_port);
        }
        ::close(fds[0]);
        ::close(fds[1]);
        client_port_ = ports[0];
        peer_port_ = ports[1];
    }

    void start() {
        const std::string c = "http://127.0.0.1:" + std::to_string(client_port_);
        const std::string p = "http://127.0.0.1:" + std::to_string(peer_port_);
        std::vector<std::string> args = {binary_,
                                         "--data-dir", dir_ + "/etcd",
                                         "--name", "t",
                                         "--listen-client-urls", c,
                                         "--advertise-client-urls", c,
                                         "--listen-peer-urls", p,
                                         "--initial-advertise-peer-urls", p,
                                         "--initial-cluster", "t=" + p};
        std::vector<char*> argv;
        for (auto& a : args) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        const std::string log = dir_ + "/etcd.log";
        const pid_t parent = ::getpid();
        const pid_t pid = ::fork();
        if (pid < 0) {
            throw std::runtime_error("etcd_process: fork failed");
        }
        if (pid == 0) {
            // Die with the test process, even when it crashes.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) {
                ::_exit(127);
            }
            const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                ::dup2(fd, 1);
                ::dup2(fd, 2);
                ::close(fd);
            }
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        pid_ = pid;
        wait_ready();
    }

    void wait_ready() {
        const auto deadline = std::chrono::steady_clock::now() + ready_timeout_;
        while (std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                throw std::runtime_error("etcd_process: etcd exited at start-up; its log:\n" + log_tail());
            }
            if (healthy()) {
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        const std::string tail = log_tail();
        kill();
        throw std::runtime_error("etcd_process: etcd did not answer GET /health in time; its log:\n" + tail);
    }

    /// GET /health answers {"health":"true"}.
    [[nodiscard]] bool healthy() const {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            return false;
        }
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons(client_port_);
        std::string got;
        if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
            const std::string req = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
            if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
                const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
                char buf[1024];
                while (std::chrono::steady_clock::now() < deadline) {
                    pollfd pfd{fd, POLLIN, 0};
                    if (::poll(&pfd, 1, 50) <= 0) {
                        continue;
                    }
                    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
                    if (n <= 0) {
                        break;
                    }
                    got.append(buf, static_cast<std::size_t>(n));
                }
            }
        }
        ::close(fd);
        return got.find(" 200 ") != std::string::npos && got.find("\"health\":\"true\"") != std::string::npos;
    }

    void end(int sig) {
        if (pid_ <= 0) {
            return;
        }
        ::kill(pid_, sig);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        int status = 0;
        while (::waitpid(pid_, &status, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() >= deadline) {
                ::kill(pid_, SIGKILL);
                ::waitpid(pid_, &status, 0);
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        pid_ = -1;
    }

    std::string binary_;
    std::chrono::milliseconds ready_timeout_;
    std::string dir_;
    std::uint16_t client_port_ = 0;
    std::uint16_t peer_port_ = 0;
    pid_t pid_ = -1;
};

}  // namespace lariv::test
