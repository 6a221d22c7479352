// larivd — the Lariv Registry daemon.
//
// Configuration precedence: flags > environment (LARIV_*) > --config file > defaults.
// Exit codes: 0 ok, 64 usage error, 70 internal error, 78 configuration error (sysexits.h).
// Signals: SIGINT/SIGTERM drain (a second one exits at once), SIGHUP reloads log level, the
// hot-reloadable limits and the TLS certificate, key and CA files from the same sources.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>

#include <CLI/CLI.hpp>
#include <asio/signal_set.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "lariv/server/config.hpp"
#include "lariv/server/monitor.hpp"
#include "lariv/server/server.hpp"
#include "lariv/server/tls.hpp"

namespace {

constexpr int exit_usage = 64;
constexpr int exit_internal = 70;
constexpr int exit_config = 78;

using lariv::server::config;

/// One flag per configuration key, generated from the key table (settings()): every key has a
/// flag, with its range in --help. Values are taken as text and go through set_from_text, the
/// same parser and range check as the environment, so "--max-line -1" is a configuration error
/// (78) naming the flag, never a value wrapped to 2^64-1.
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
        const std::string help = std::string(s.help) + " [" + s.range() + "]";
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

void setup_logging(const config& c) {
    auto logger = spdlog::stderr_color_mt("larivd");
    spdlog::set_default_logger(logger);
    if (c.log_format == "json") {
        spdlog::set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","msg":"%v"})");
    } else {
        spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
    }
    spdlog::set_level(spdlog::level::from_str(c.log_level));
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
        // TLS: the certificate, key and CA files must load, as they must at start.
        try {
            if (cfg.tls_enabled()) {
                (void)lariv::server::make_server_tls_context({cfg.tls_cert, cfg.tls_key, cfg.tls_ca});
            }
        } catch (const lariv::server::config_error& e) {
            std::cerr << "larivd: " << e.what() << '\n';
            return exit_config;
        }
        std::cout << "larivd: configuration ok\n";
        return 0;
    }
    if (health_check) {
        return lariv::server::probe_health(cfg) ? 0 : 1;
    }
    setup_logging(cfg);

    try {
        lariv::server::server srv(cfg);
        asio::signal_set signals(srv.context(), SIGINT, SIGTERM, SIGHUP);
        int stop_signals = 0;
        std::function<void(std::error_code, int)> on_signal = [&](std::error_code ec, int sig) {
            if (ec) {
                return;
            }
            if (sig == SIGHUP) {
                try {
                    const config next = resolve(config_file, f);
                    spdlog::set_level(spdlog::level::from_str(next.log_level));
                    srv.reload(next);  // the same validation and fd clamp as at start
                    spdlog::info("SIGHUP: reloaded log level, limits and TLS certificates");
                } catch (const std::exception& e) {
                    spdlog::error("SIGHUP: configuration rejected, keeping the old one: {}", e.what());
                }
            } else if (++stop_signals == 1) {
                spdlog::info("signal {}: draining (send it again to exit at once)", sig);
                srv.drain();
            } else {
                spdlog::warn("signal {} again: exiting now", sig);
                std::_Exit(0);
            }
            signals.async_wait(on_signal);
        };
        signals.async_wait(on_signal);
        srv.start();
        srv.wait();
        spdlog::info("larivd stopped");
    } catch (const lariv::server::config_error& e) {
        spdlog::critical("{}", e.what());
        return exit_config;
    } catch (const std::system_error& e) {
        spdlog::critical("cannot start: {}", e.what());
        return exit_internal;
    } catch (const std::exception& e) {
        spdlog::critical("internal error: {}", e.what());
        return exit_internal;
    }
    return 0;
}
