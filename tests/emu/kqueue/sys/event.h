// <sys/event.h> of the kqueue emulator (tests/emu/kqueue/kqueue.cpp), for Linux hosts.
//
// ABI: FreeBSD >= 12. struct kevent has a 64-bit `data` and `ext[4]`; the constants below carry
// FreeBSD's values (FreeBSD sys/event.h), so EVFILT_USER is -11 (macOS: -10) and the timer
// units are NOTE_SECONDS 0x1, NOTE_MSECONDS 0x2, NOTE_USECONDS 0x4, NOTE_NSECONDS 0x8,
// NOTE_ABSTIME 0x10 (macOS numbers them differently and has no NOTE_MSECONDS). Backends test
// optional features with #ifdef, so every constant is a macro. What is emulated, and every known
// difference from a real kernel, is listed at the top of kqueue.cpp.
#ifndef ASYNCDISPATCH_EMU_SYS_EVENT_H
#define ASYNCDISPATCH_EMU_SYS_EVENT_H

#include <stdint.h>
#include <time.h>

// Filters (ident namespace: an fd for READ/WRITE, a pid for PROC, a signal number for SIGNAL,
// any number for TIMER and USER).
#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#define EVFILT_AIO (-3)
#define EVFILT_VNODE (-4)
#define EVFILT_PROC (-5)
#define EVFILT_SIGNAL (-6)
#define EVFILT_TIMER (-7)
#define EVFILT_PROCDESC (-8)
#define EVFILT_FS (-9)
#define EVFILT_LIO (-10)
#define EVFILT_USER (-11)
#define EVFILT_SENDFILE (-12)
#define EVFILT_EMPTY (-13)
#define EVFILT_SYSCOUNT 13

// Actions.
#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ENABLE 0x0004
#define EV_DISABLE 0x0008
#define EV_FORCEONESHOT 0x0100
#define EV_KEEPUDATA 0x0200

// Flags.
#define EV_ONESHOT 0x0010
#define EV_CLEAR 0x0020
#define EV_RECEIPT 0x0040
#define EV_DISPATCH 0x0080
#define EV_SYSFLAGS 0xF000
#define EV_DROP 0x1000
#define EV_FLAG1 0x2000
#define EV_FLAG2 0x4000

// Returned values.
#define EV_EOF 0x8000
#define EV_ERROR 0x4000

// EVFILT_USER: fflags control (top two bits), user bits (low 24) and the trigger.
#define NOTE_FFNOP 0x00000000
#define NOTE_FFAND 0x40000000
#define NOTE_FFOR 0x80000000
#define NOTE_FFCOPY 0xc0000000
#define NOTE_FFCTRLMASK 0xc0000000
#define NOTE_FFLAGSMASK 0x00ffffff
#define NOTE_TRIGGER 0x01000000

// EVFILT_READ / EVFILT_WRITE.
#define NOTE_LOWAT 0x0001
#define NOTE_FILE_POLL 0x0002

// EVFILT_PROC.
#define NOTE_EXIT 0x80000000
#define NOTE_FORK 0x40000000
#define NOTE_EXEC 0x20000000
#define NOTE_PCTRLMASK 0xf0000000
#define NOTE_PDATAMASK 0x000fffff
#define NOTE_TRACK 0x00000001
#define NOTE_TRACKERR 0x00000002
#define NOTE_CHILD 0x00000004

// EVFILT_TIMER units (none of them: milliseconds) and absolute deadlines.
#define NOTE_SECONDS 0x00000001
#define NOTE_MSECONDS 0x00000002
#define NOTE_USECONDS 0x00000004
#define NOTE_NSECONDS 0x00000008
#define NOTE_ABSTIME 0x00000010

struct kevent {
  uintptr_t ident;      // identifier for this event
  short filter;         // filter for event
  unsigned short flags; // action flags for kqueue
  unsigned int fflags;  // filter flag value
  int64_t data;         // filter data value
  void* udata;          // opaque user data identifier
  uint64_t ext[4];      // extensions (ext[2..3] passed through untouched)
};

// FreeBSD's EV_SET is a macro that also zeroes ext; an inline function does the same with the
// same call syntax, EV_SET(&kev, ident, filter, flags, fflags, data, udata).
#ifdef __cplusplus
inline void EV_SET(struct kevent* kev, uintptr_t ident, short filter, unsigned short flags,
                   unsigned int fflags, int64_t data, void* udata) {
  kev->ident = ident;
  kev->filter = filter;
  kev->flags = flags;
  kev->fflags = fflags;
  kev->data = data;
  kev->udata = udata;
  kev->ext[0] = kev->ext[1] = kev->ext[2] = kev->ext[3] = 0;
}
#else
#define EV_SET(kevp, a, b, c, d, e, f)                                                             \
  do {                                                                                             \
    struct kevent* kev_ = (kevp);                                                                  \
    kev_->ident = (a);                                                                             \
    kev_->filter = (b);                                                                            \
    kev_->flags = (c);                                                                             \
    kev_->fflags = (d);                                                                            \
    kev_->data = (e);                                                                              \
    kev_->udata = (f);                                                                             \
    kev_->ext[0] = kev_->ext[1] = kev_->ext[2] = kev_->ext[3] = 0;                                 \
  } while (0)
#endif

#define EMU_KQUEUE 1

#ifdef __cplusplus
extern "C" {
#endif
int kqueue(void);
int kevent(int kq, const struct kevent* changelist, int nchanges, struct kevent* eventlist,
           int nevents, const struct timespec* timeout);
// The emulator's own, not the kernel's: the emulator cannot see close(kq), so what a closed kq
// held (its private descriptors, its signals' mask) is reclaimed at the next kqueue() or here.
// A test that counts the process's descriptors calls it first (EMU_KQUEUE says it exists).
void emu_kqueue_collect(void);
#ifdef __cplusplus
}
#endif

#endif
