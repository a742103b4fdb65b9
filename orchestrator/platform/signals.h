// Signals: handlers that only count (no work inside a handler); the run loop polls the count every tick.
#pragma once

namespace ab {

/// Installs handlers for SIGINT, SIGTERM and SIGHUP (counted as interrupts) and SIGCHLD (wakes
/// poll() early: no SA_RESTART). Restores the previous handlers on destruction.
class SignalWatcher {
 public:
  SignalWatcher();
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  /// How many SIGINT/SIGTERM/SIGHUP have arrived since construction.
  static int interrupts();
};

}  // namespace ab
