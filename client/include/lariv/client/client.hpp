// lariv/client/client.hpp — the whole client library: lariv::client::connection and its errors.
#pragma once

#include "lariv/client/connection.hpp"
#include "lariv/client/error.hpp"
