// larivd — the Lariv Registry daemon.
//
// Configuration precedence: flags > environment (LARIV_*) > --config file > defaults.
// Exit codes (sysexits.h; listed by --help): 0 ok, 1 --health-check not healthy, 64 usage error,
// 69 a listener cannot open (bind/listen: address in use, not available, permission), 70 internal
// error, 78 configuration error (also: an address that does not resolve, a TLS file that does
// not load).
// Logs: stderr, text or JSON lines (log_format); lariv/server/log.hpp has the format.
// Signals: SIGINT/SIGTERM drain (a second one exits at once), SIGHUP reloads log level, the
// hot-reloadable limits and the TLS certificate, key and CA files from the same sources.
// systemd (Type=notify, notify.hpp): READY=1 once listening, RELOADING=1/READY=1 around SIGHUP,
// STOPPING=1 on drain, WATCHDOG=1 from the event loop; all of it a no-op without NOTIFY_SOCKET.
#include <csignal>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include "lariv/server/config.hpp"
#include "lariv/server/listener.hpp"
#include "lariv/server/log.hpp"
#include "lariv/server/monitor.hpp"
#include "lariv/server/server.hpp"
#include "lariv/server/tls.hpp"
#include "notify.hpp"

namespace {

constexpr int exit_health = 1;
constexpr int exit_usage = 64;
constexpr int exit_unavailable = 69;
constexpr int exit_internal = 70;
constexpr int exit_config = 78;

namespace llog = lariv::server::log;
using spdlog::level::level_enum;

using lariv::server::config;

/// One flag per configuration key, generated from the key table (settings()): every key has a
/// flag, and its --help line gives the range, the default, the LARIV_* variable and the JSON key.
/// Values are taken as text and go through set_from_text, the same parser and range check as the
/// environment, so "--max-line -1" is a configuration error (78) naming the flag, never a value
/// wrapped to 2^64-1.
struct flags {
    std::map<std::string, std::string, std::less<>> text;  // key -> value as given
    std::map<std::string, CLI::Option*, std::less<>> option;
};

void add_flags(CLI::App& app, flags& f) {
    for (const auto& s : lariv::server::settings()) {
        const std::string key(s.key);
        std::string names = s.flag();
        if (key == "port") {
            names = "-p," + names;
        } else if (key == "threads") {
            names = "-t," + names;
        }
        const std::string help = std::string(s.help) + " [" + s.range() + "]; default " +
                                 s.default_text() + "; env " + s.env() + "; JSON " + s.json_key();
        // allow_extra_args(false): "--max-line -1" takes "-1" as the value, not as a flag.
        auto* o = app.add_option(names, f.text[key], help)->type_name("VALUE");
        f.option[key] = o;
    }
}

void apply_flags(config& c, const flags& f) {
    for (const auto& [key, opt] : f.option) {
        if (opt->count() > 0) {
            lariv::server::set_from_text(c, key, f.text.at(key), "flag " + opt->get_name());
        }
    }
}

/// Builds the effective configuration from all sources. Throws config_error.
config resolve(const std::string& file, const flags& f) {
    config c;
    if (!file.empty()) {
        lariv::server::load_file(c, file);
    }
    lariv::server::apply_environment(c);
    apply_flags(c, f);
    c.validate();
    return c;
}

/// The end of --help: precedence, addresses, logs and the exit codes (the constants above).
std::string help_footer() {
    return "Every setting: a flag, an environment variable LARIV_<KEY> and a JSON key in the --config\n"
           "file (or LARIV_CONFIG); precedence: flags > environment > file > defaults.\n"
           "Addresses (listen_address, tls_listen_address, monitor_address): an IP address, or a\n"
           "host name resolved at start to the first address getaddrinfo returns.\n"
           "Logs: stderr; log_format text (\"msg key=value ...\") or json (one object a line: ts,\n"
           "level, msg, node and the event's values).\n"
           "Exit codes: 0 ok; " + std::to_string(exit_health) + " --health-check: not healthy; " +
           std::to_string(exit_usage) + " usage error (unknown flag or argument);\n  " +
           std::to_string(exit_unavailable) +
           " a listener cannot open (bind/listen: address in use or not available); " +
           std::to_string(exit_internal) + " internal error;\n  " + std::to_string(exit_config) +
           " configuration error (bad value, unknown key, unreadable file, address that does\n"
           "  not resolve, TLS file that does not load).";
}

const char* signal_name(int sig) {
    switch (sig) {
        case SIGINT: return "SIGINT";
        case SIGTERM: return "SIGTERM";
        case SIGHUP: return "SIGHUP";
        default: return "signal";
    }
}

/// STATUS= for READY=1: where it listens ("listen=127.0.0.1:7411 tls=off monitor=...").
std::string ready_status(const lariv::server::server& srv) {
    const nlohmann::ordered_json d = srv.describe();
    return "listen=" + d["listen"].get<std::string>() + " tls=" + d["tls"].get<std::string>() +
           " monitor=" + d["monitor"].get<std::string>() +
           " max_sessions=" + std::to_string(srv.max_sessions());
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"larivd: the Lariv Registry daemon (connection registry for TPR-style servers)",
                 "larivd"};
    app.set_version_flag("-V,--version", std::string("larivd ") + LARIV_VERSION);
    std::string config_file;
    bool print_config = false;
    bool check_config = false;
    bool health_check = false;
    flags f;
    // Not CLI::ExistingFile: a missing config file is a configuration error (78), not usage (64).
    app.add_option("-c,--config", config_file, "JSON configuration file");
    app.add_flag("--print-config", print_config, "Print the effective configuration as JSON and exit");
    app.add_flag("--check-config", check_config, "Validate the configuration and exit");
    app.add_flag("--health-check", health_check,
                 "GET /healthz from the configured monitor and exit 0 if it answers 200 "
                 "(for container HEALTHCHECKs: no curl needed)");
    add_flags(app, f);
    app.footer(help_footer());
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return exit_usage;  // an unknown flag is an error, never usage with exit 0
    }

    if (config_file.empty()) {
        if (const char* env = std::getenv("LARIV_CONFIG"); env != nullptr && *env != '\0') {
            config_file = env;  // a mounted config file in a container
        }
    }
    config cfg;
    try {
        cfg = resolve(config_file, f);
    } catch (const lariv::server::config_error& e) {
        std::cerr << "larivd: " << e.what() << '\n';
        return exit_config;
    }
    if (print_config) {
        std::cout << nlohmann::json(cfg).dump(2) << '\n';
        return 0;
    }
    if (check_config) {
        // TLS: the certificate, key and CA files must load, and the addresses resolve, as they
        // must at start.
        try {
            if (cfg.tls_enabled()) {
                (void)lariv::server::make_server_tls_context({cfg.tls_cert, cfg.tls_key, cfg.tls_ca});
                (void)lariv::server::resolve_endpoint("tls_listen_address", cfg.effective_tls_address(),
                                                      cfg.tls_port);
            }
            if (!cfg.listen_address.empty()) {
                (void)lariv::server::resolve_endpoint("listen_address", cfg.listen_address, cfg.port);
            }
            if (cfg.monitor_port != 0) {
                (void)lariv::server::resolve_endpoint("monitor_address", cfg.monitor_address,
                                                      cfg.monitor_port);
            }
        } catch (const lariv::server::config_error& e) {
            std::cerr << "larivd: " << e.what() << '\n';
            return exit_config;
        }
        std::cout << "larivd: configuration ok\n";
        return 0;
    }
    if (health_check) {
        return lariv::server::probe_health(cfg) ? 0 : exit_health;
    }
    llog::setup_default_logger(cfg.log_format, cfg.log_level, {{"node", cfg.node_id}});

    try {
        lariv::server::server srv(cfg);
        // After srv: destroyed before the io_context it runs its watchdog timer on.
        larivd::notifier notify(srv.context());
        asio::signal_set signals(srv.context(), SIGINT, SIGTERM, SIGHUP);
        int stop_signals = 0;
        std::function<void(std::error_code, int)> on_signal = [&](std::error_code ec, int sig) {
            if (ec) {
                return;
            }
            if (sig == SIGHUP) {
                notify.reloading();
                try {
                    const config next = resolve(config_file, f);
                    spdlog::set_level(spdlog::level::from_str(next.log_level));
                    srv.reload(next);  // the same validation and fd clamp as at start
                    llog::event(level_enum::info, "SIGHUP: reloaded log level, limits and TLS certificates",
                               {{"log_level", next.log_level},
                                {"max_sessions", srv.max_sessions()},
                                {"max_queue_bytes", next.max_queue_bytes},
                                {"rate_limit", next.rate_limit},
                                {"rate_burst", next.rate_burst},
                                {"idle_timeout_ms", next.idle_timeout_ms},
                                {"tls_cert", next.tls_cert}});
                    notify.ready("reloaded; " + ready_status(srv));
                } catch (const std::exception& e) {
                    llog::event(level_enum::err, "SIGHUP: configuration rejected, keeping the old one",
                               {{"error", e.what()}});
                    notify.ready(std::string("reload rejected, old configuration kept: ") + e.what());
                }
            } else if (++stop_signals == 1) {
                llog::event(level_enum::info, "draining on signal (send it again to exit at once)",
                           {{"signal", signal_name(sig)}});
                notify.stopping(std::string("draining on ") + signal_name(sig));
                srv.drain();
            } else {
                llog::event(level_enum::warn, "signal again: exiting now", {{"signal", signal_name(sig)}});
                std::_Exit(0);
            }
            signals.async_wait(on_signal);
        };
        signals.async_wait(on_signal);
        srv.start({{"config", config_file.empty() ? std::string("none") : config_file},
                   {"pid", static_cast<long>(::getpid())}});
        // Every listener was bound and listening in server's constructor and start() queued the
        // accepts; READY=1 goes out from the event loop itself, once it runs handlers.
        notify.post_ready([&srv] { return ready_status(srv); });
        srv.wait();
        llog::event(level_enum::info, "larivd stopped");
    } catch (const lariv::server::listen_error& e) {
        // "cannot start: client listener 127.0.0.1:7411: bind: Address already in use"
        llog::event(level_enum::critical, std::string("cannot start: ") + e.what(),
                   {{"listener", e.name()}, {"address", e.address()}, {"exit", exit_unavailable}});
        return exit_unavailable;
    } catch (const lariv::server::cluster_error& e) {
        // A node id held by a live node is the operator's to fix (78, with the holder named);
        // etcd not answering may pass (69, as for a listener that cannot bind).
        const int code = e.code() == lariv::server::cluster_errc::id_taken ? exit_config : exit_unavailable;
        llog::event(level_enum::critical, std::string("cannot start: ") + e.what(), {{"exit", code}});
        return code;
    } catch (const lariv::server::config_error& e) {
        llog::event(level_enum::critical, std::string("cannot start: ") + e.what(), {{"exit", exit_config}});
        return exit_config;
    } catch (const std::system_error& e) {
        llog::event(level_enum::critical, std::string("cannot start: ") + e.what(), {{"exit", exit_internal}});
        return exit_internal;
    } catch (const std::exception& e) {
        llog::event(level_enum::critical, std::string("internal error: ") + e.what(), {{"exit", exit_internal}});
        return exit_internal;
    }
    return 0;
}
