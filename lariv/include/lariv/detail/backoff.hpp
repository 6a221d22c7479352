// lariv/detail/backoff.hpp — bounded spinning, then yielding, for the few places that wait.
#pragma once

#include <thread>

namespace lariv::detail {

/// Exponential spin (with the CPU's pause hint) up to a bound, then std::this_thread::yield().
/// Used only where the contract says an operation waits: get/get_mut while a conflicting guard
/// is held, take() for guards already held, and inserters while one thread links a buffer.
class backoff {
public:
#if defined(LARIV_BACKOFF_HOOK)
    // Test knob: model checkers (relacy) replace waiting with their own scheduler yield.
    void pause() noexcept { LARIV_BACKOFF_HOOK(); }
#else
    void pause() noexcept {
        if (spins_ < spin_limit) {
            for (unsigned i = 0; i < (1U << spins_); ++i) {
                cpu_relax();
            }
            ++spins_;
        } else {
            std::this_thread::yield();
        }
    }
#endif

private:
    static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield" ::: "memory");
#endif
    }
    static constexpr unsigned spin_limit = 6;
    unsigned spins_ = 0;
};

}  // namespace lariv::detail
