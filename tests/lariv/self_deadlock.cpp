// Debug-build self-deadlock checks (lariv.hpp, contract "Self-deadlocks"): each case makes this
// thread wait for a guard it holds itself. A debug build must fail an assert that names the case;
// the ctest entries (tests/lariv/CMakeLists.txt) match its message and have a short timeout, so a
// regression to spinning forever fails. Built with -UNDEBUG whatever the build type.
//
//   lariv_self_deadlock <case>    case: get_mut_in_for_each | get_under_write_guard |
//                                       take_under_guard | take_in_for_each | ok
#ifdef NDEBUG
#error "lariv_self_deadlock must be built without NDEBUG"
#endif
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>
#include <atomic>
#include <chrono>

#include <unistd.h>

#include "lariv/lariv.hpp"

namespace {
/// The assert has printed its message; end normally so that ctest judges the output (it counts a
/// process killed by a signal as failed whatever PASS_REGULAR_EXPRESSION says).
extern "C" void on_abort(int /*sig*/) {
    static const char msg[] = "lariv_self_deadlock: aborted by the assert\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(0);
}
}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: lariv_self_deadlock <case>\n");
        return 2;
    }
    const char* c = argv[1];
    lariv::Lariv<int> l(lariv::Options{.buffer_capacity = 8});
    const lariv::Index a = l.push(1);
    const lariv::Index b = l.push(2);
    std::setvbuf(stderr, nullptr, _IONBF, 0);
    if (std::strcmp(c, "ok") != 0) {
        (void)std::signal(SIGABRT, on_abort);
    }
    if (std::strcmp(c, "get_mut_in_for_each") == 0) {
        l.for_each([&](const lariv::Index& x, const int&) {
            std::fprintf(stderr, "get_mut of the visited element...\n");
            auto w = l.get_mut(x);  // must assert, not spin
            (void)w;
        });
    } else if (std::strcmp(c, "get_under_write_guard") == 0) {
        auto w = l.get_mut(a);
        std::fprintf(stderr, "get while holding a WriteGuard...\n");
        auto r = l.get(a);  // must assert, not spin
        (void)r;
    } else if (std::strcmp(c, "take_under_guard") == 0) {
        auto r = l.get(a);
        std::fprintf(stderr, "take while holding a ReadGuard...\n");
        auto t = l.take(a);  // must assert, not spin
        (void)t;
    } else if (std::strcmp(c, "take_in_for_each") == 0) {
        l.for_each([&](const lariv::Index& x, const int&) {
            std::fprintf(stderr, "take of the visited element...\n");
            auto t = l.take(x);  // must assert, not spin
            (void)t;
        });
    } else if (std::strcmp(c, "ok") == 0) {
        // No false reports: guards on other elements, several readers, stale indexes, re-entry
        // after release, and a lookup that waits for another thread's guard.
        {
            auto r1 = l.get(a);
            auto r2 = l.get(a);
            auto w = l.get_mut(b);
            if (!r1 || !r2 || !w) {
                return 1;
            }
        }
        l.for_each([&](const lariv::Index& x, const int&) {
            if (x != a) {
                auto w = l.get_mut(a);  // another element than the visited one
                if (!w) {
                    std::fprintf(stderr, "unexpected empty guard\n");
                }
            }
        });
        {
            auto w = l.get_mut(a);
        }
        {
            // Another thread's WriteGuard: get() waits for it (the check runs and must not fire).
            std::atomic<int> state{0};
            std::thread other([&] {
                auto w = l.get_mut(b);
                state.store(1);
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            });
            while (state.load() == 0) {
                std::this_thread::yield();
            }
            auto r = l.get(b);
            other.join();
            if (!r || *r != 2) {
                return 1;
            }
        }
        auto t = l.take(a);
        if (!t || *t != 1 || l.get(a)) {
            return 1;
        }
        std::printf("lariv_self_deadlock: ok\n");
        return 0;
    } else {
        std::fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    std::fprintf(stderr, "lariv_self_deadlock: %s returned without an assert\n", c);
    return 1;
}
