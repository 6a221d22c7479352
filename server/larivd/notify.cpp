#include "notify.hpp"

#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <utility>

#include <asio/post.hpp>

#ifdef LARIV_WITH_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace larivd {

namespace {

/// STATUS= is one line: a newline in the text would start a new assignment.
std::string one_line(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        if (c == '\n' || c == '\r') {
            c = ' ';
        }
    }
    return out;
}

std::uint64_t monotonic_usec() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000U +
           static_cast<std::uint64_t>(ts.tv_nsec) / 1000U;
}

}  // namespace

notifier::notifier(asio::io_context& io)
    : io_(io)
    , timer_(io) {
#ifdef LARIV_WITH_SYSTEMD
    const char* sock = std::getenv("NOTIFY_SOCKET");
    enabled_ = sock != nullptr && *sock != '\0';
    std::uint64_t usec = 0;
    // > 0: WATCHDOG_USEC is set and WATCHDOG_PID, if set, is this process.
    if (enabled_ && ::sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        watchdog_ = std::chrono::microseconds(static_cast<std::int64_t>(usec));
    }
#endif
}

notifier::~notifier() {
    guard_->alive.store(false);
    stop_watchdog();
}

void notifier::send([[maybe_unused]] const std::string& state) {
#ifdef LARIV_WITH_SYSTEMD
    if (enabled_) {
        // Errors (a manager that went away) are not the daemon's problem: nothing to do about
        // them, and the service keeps serving.
        (void)::sd_notify(0, state.c_str());
    }
#endif
}

void notifier::ready(std::string_view status) {
    if (!stopping_.load()) {
        send("READY=1\nSTATUS=" + one_line(status));
    }
}

void notifier::post_ready(std::function<std::string()> status) {
    asio::post(io_, [this, g = guard_, status = std::move(status)] {
        if (!g->alive.load()) {
            return;  // the notifier (and what status() reads) is gone
        }
        ready(status());
        start_watchdog();
    });
}

void notifier::reloading() {
    if (stopping_.load()) {
        return;
    }
    send("RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()));
}

void notifier::stopping(std::string_view status) {
    stopping_.store(true);
    send("STOPPING=1\nSTATUS=" + one_line(status));
}

void notifier::start_watchdog() {
    if (watchdog_.count() <= 0 || guard_->petting.exchange(true)) {
        return;
    }
    send("WATCHDOG=1");
    arm();
}

void notifier::stop_watchdog() {
    guard_->petting.store(false);
    timer_.cancel();
}

void notifier::arm() {
    timer_.expires_after(watchdog_ / 2);
    timer_.async_wait([this, g = guard_](std::error_code ec) {
        if (ec || !g->alive.load() || !g->petting.load()) {
            return;  // cancelled, or the notifier is gone: touch nothing
        }
        send("WATCHDOG=1");
        arm();
    });
}

}  // namespace larivd
