// larivd's service-manager notifications (sd_notify(3)): readiness, reload, stop and the
// watchdog. Daemon-only: the embeddable lariv::registry never talks to systemd.
//
// Without NOTIFY_SOCKET in the environment (a shell, a container, Type=simple) every call is a
// no-op. Under systemd with Type=notify:
//   ready(status)      READY=1 + STATUS=, once every listener is bound and accepting;
//   reloading()        RELOADING=1 + MONOTONIC_USEC= at the start of a SIGHUP reload, then
//   ready(status)      READY=1 again when it is applied or rejected;
//   stopping(status)   STOPPING=1 + STATUS= at the start of a drain;
//   start_watchdog()   WATCHDOG=1 every WATCHDOG_USEC/2 from a timer on the io_context, when the
//                      manager enabled the watchdog (sd_watchdog_enabled): an event loop that
//                      stops running handlers stops petting, and systemd restarts the daemon.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

namespace larivd {

class notifier {
public:
    /// Reads NOTIFY_SOCKET and the watchdog settings (WATCHDOG_USEC, WATCHDOG_PID) once.
    explicit notifier(asio::io_context& io);
    ~notifier();
    notifier(const notifier&) = delete;
    notifier& operator=(const notifier&) = delete;

    /// Whether a service manager listens (NOTIFY_SOCKET is set).
    [[nodiscard]] bool enabled() const noexcept { return enabled_; }
    /// The watchdog period the manager asked for (zero: no watchdog).
    [[nodiscard]] std::chrono::microseconds watchdog_timeout() const noexcept { return watchdog_; }

    /// Ignored once stopping() was sent (a SIGTERM that beat the first READY=1).
    void ready(std::string_view status);
    /// Posts ready(status()) and start_watchdog() to the io_context: READY=1 goes out from the
    /// event loop itself, once it runs handlers. Skipped if the notifier is gone by then.
    void post_ready(std::function<std::string()> status);
    void reloading();
    void stopping(std::string_view status);
    /// Starts petting every watchdog_timeout()/2 on the io_context (no-op without a watchdog).
    void start_watchdog();
    /// Cancels the timer (the destructor does it too).
    void stop_watchdog();

private:
    void send(const std::string& state);
    void arm();

    bool enabled_ = false;
    std::atomic<bool> stopping_{false};
    std::chrono::microseconds watchdog_{0};
    asio::io_context& io_;
    asio::steady_timer timer_;
    // Shared with the handlers: one that completed (or was posted) just before the notifier was
    // destroyed may still run (the server polls its io_context once more on the way out), and
    // must then see alive == false and touch nothing else.
    struct guard {
        std::atomic<bool> alive{true};
        std::atomic<bool> petting{false};
    };
    std::shared_ptr<guard> guard_ = std::make_shared<guard>();
};

}  // namespace larivd
