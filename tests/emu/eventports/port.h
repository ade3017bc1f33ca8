// port.h: illumos event ports on Linux, for the emulator in tests/emu/eventports.
//
// Code compiled with -Itests/emu/eventports that includes <port.h> gets the illumos declarations
// (<port.h> and <sys/port.h> of illumos-gate, same names, same values, same layout on LP64) and
// links against eventports.cpp, which implements them over epoll, timerfd and eventfd. What is
// emulated and how it differs from illumos is listed at the top of eventports.cpp.
//
// Timers with SIGEV_PORT: illumos delivers PORT_SOURCE_TIMER events for a POSIX timer created with
// timer_create(clock, &sev, &id) and sev.sigev_notify = SIGEV_PORT. glibc has its own
// timer_create, and Linux reads sigev_notify 4 (illumos's SIGEV_PORT) as SIGEV_THREAD_ID. So this
// header renames timer_create, timer_settime, timer_gettime, timer_delete and timer_getoverrun to
// the emulator's emu_timer_* for the translation units that include it. That is the one place a
// macro stands for a function, and it is chosen over symbol interposition on purpose:
//   - it is local: only code that asked for event ports is redirected; glibc, the sanitizer
//     runtimes and every other object keep the real functions, which the emulator forwards to
//     for any notification other than SIGEV_PORT;
//   - nothing is interposed, so there is no dlsym(RTLD_NEXT) and no clash with the timer_create
//     interceptors of ASan or TSan, and static and dynamic links behave the same;
//   - the backend keeps calling timer_create by its illumos name with the illumos signature.
// <time.h> and <signal.h> are included first, so glibc's own declarations are seen under the real
// names; define EMU_PORT_NO_TIMER_MACROS to get the declarations without the renaming.
#ifndef EMU_EVENTPORTS_PORT_H
#define EMU_EVENTPORTS_PORT_H

#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>

// illumos <sys/types.h> names used by the event port prototypes.
typedef unsigned int uint_t;
typedef unsigned short ushort_t;
typedef struct timespec timespec_t;

// Event sources (illumos <sys/port.h>).
#define PORT_SOURCE_AIO 1
#define PORT_SOURCE_TIMER 2
#define PORT_SOURCE_USER 3
#define PORT_SOURCE_FD 4
#define PORT_SOURCE_ALERT 5
#define PORT_SOURCE_MQ 6
#define PORT_SOURCE_FILE 7

// port_alert() flags.
#define PORT_ALERT_SET 0x01
#define PORT_ALERT_UPDATE 0x02
#define PORT_ALERT_INVALID (PORT_ALERT_SET | PORT_ALERT_UPDATE)

// sigev_notify value for event port notification (illumos <sys/siginfo.h>). Linux gives 4 to
// SIGEV_THREAD_ID, which the emulated timer_create therefore cannot offer.
#ifndef SIGEV_PORT
#define SIGEV_PORT 4
#endif

typedef struct port_event {
  int portev_events;       // source specific: poll(2) bits, port_send events, timer expirations
  ushort_t portev_source;  // PORT_SOURCE_*
  ushort_t portev_pad;     // port internal use
  uintptr_t portev_object; // source specific: fd, timer id
  void* portev_user;       // user cookie
} port_event_t;

typedef struct port_notify {
  int portnfy_port;   // bind request(s) to port
  void* portnfy_user; // user defined
} port_notify_t;

// Test-mode switches of the emulator (no illumos equivalent), for emu_port_quirks():
// every port_getn/port_get that retrieves events with a non-NULL timeout returns -1 with errno
// ETIME (*nget = the events retrieved), as illumos kernels before OS-7991 could;
#define EMU_PORT_QUIRK_ETIME_WITH_EVENTS 0x1
// on ETIME with no event retrieved, *nget keeps the value it had on input (libuv's "kernel bug
// where nfds is not updated"): a caller must notice that no event was written.
#define EMU_PORT_QUIRK_NGET_NOT_UPDATED 0x2

#ifdef __cplusplus
extern "C" {
#endif

int port_create(void);
int port_associate(int port, int source, uintptr_t object, int events, void* user);
int port_dissociate(int port, int source, uintptr_t object);
int port_get(int port, port_event_t* pe, const timespec_t* timeout);
int port_getn(int port, port_event_t list[], uint_t max, uint_t* nget, const timespec_t* timeout);
int port_send(int port, int events, void* user);
int port_sendn(int ports[], int errors[], uint_t nent, int events, void* user);
int port_alert(int port, int flags, int events, void* user);

int emu_timer_create(clockid_t clock, struct sigevent* sev, timer_t* id);
int emu_timer_settime(timer_t id, int flags, const struct itimerspec* value,
                      struct itimerspec* old);
int emu_timer_gettime(timer_t id, struct itimerspec* value);
int emu_timer_delete(timer_t id);
int emu_timer_getoverrun(timer_t id);

// Sets the EMU_PORT_QUIRK_* flags for every port (the environment variable EMU_PORT_QUIRKS, read
// once, gives the initial value); returns the previous flags.
int emu_port_quirks(int flags);
// Sets process.max-port-events for ports created from now on: port_send fails with EAGAIN once
// that many of its events wait in a port (illumos default 65536); returns the previous limit.
int emu_port_max_events(int limit);

#ifdef __cplusplus
}
#endif

#ifndef EMU_PORT_NO_TIMER_MACROS
#define timer_create emu_timer_create
#define timer_settime emu_timer_settime
#define timer_gettime emu_timer_gettime
#define timer_delete emu_timer_delete
#define timer_getoverrun emu_timer_getoverrun
#endif

#endif // EMU_EVENTPORTS_PORT_H
