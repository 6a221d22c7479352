#pragma once
/// \file
/// Umbrella header for the Lariv wire protocol codec (`lariv::protocol`).

#include "lariv/protocol/decoder.hpp"     // IWYU pragma: export
#include "lariv/protocol/encoder.hpp"     // IWYU pragma: export
#include "lariv/protocol/error.hpp"       // IWYU pragma: export
#include "lariv/protocol/json.hpp"        // IWYU pragma: export
#include "lariv/protocol/limits.hpp"      // IWYU pragma: export
#include "lariv/protocol/link.hpp"        // IWYU pragma: export
#include "lariv/protocol/message.hpp"     // IWYU pragma: export
#include "lariv/protocol/session_id.hpp"  // IWYU pragma: export
