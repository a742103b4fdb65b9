// SignalWatcher: async-signal-safe counting handlers, restored on destruction.
#include "orchestrator/platform/signals.h"

#include <signal.h>

#include <csignal>

namespace ab {
namespace {

volatile std::sig_atomic_t g_interrupts = 0;
struct sigaction g_old_int, g_old_term, g_old_hup, g_old_chld;

extern "C" void on_interrupt(int) { g_interrupts = g_interrupts + 1; }
extern "C" void on_child(int) {}

void install(int sig, void (*handler)(int), struct sigaction* old) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: poll() in the loop returns at once
  sigaction(sig, &sa, old);
}

}  // namespace

SignalWatcher::SignalWatcher() {
  g_interrupts = 0;
  install(SIGINT, on_interrupt, &g_old_int);
  install(SIGTERM, on_interrupt, &g_old_term);
  install(SIGHUP, on_interrupt, &g_old_hup);
  install(SIGCHLD, on_child, &g_old_chld);
}

SignalWatcher::~SignalWatcher() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
  sigaction(SIGHUP, &g_old_hup, nullptr);
  sigaction(SIGCHLD, &g_old_chld, nullptr);
}

int SignalWatcher::interrupts() { return g_interrupts; }

}  // namespace ab
