/*
 * The bench's compiled floors: the same work as peers.ts RELAY_PY's modes, in C, so that a
 * floor below a target shows the machine's limit and not an interpreter's cost per call.
 * Built by the bench at its start (`cc -O2`, into its scratch directory), never installed,
 * never part of chardev. Same argv as relay.py, so the bench swaps the program only:
 *
 *   relay out tcp|unix ADDR -- GUEST...      guest stdout -> the first client, splice(2)
 *                                            through the guest's 1 MiB pipe
 *   relay in  tcp|unix ADDR -- GUEST...      the first client -> guest stdin, splice(2)
 *   relay log-tee tcp|unix ADDR LOG -- GUEST...
 *                                            the <log> floor without a byte in user space:
 *                                            tee(2) the guest's pipe into a scratch pipe,
 *                                            splice that to LOG, then splice as many bytes
 *                                            from the guest's pipe to the client
 *   relay log-copy tcp|unix ADDR LOG -- GUEST...
 *                                            the <log> floor by copy, as relay.py's `log`:
 *                                            read into one 1 MiB buffer, write it to LOG,
 *                                            send it to the client
 *   relay file-pipe - PATH -- GUEST...       guest stdout -> PATH as chardev's thread writes a
 *                                            file: splice(2) what the guest's pipe holds into
 *                                            a 1 MiB pipe of the relay's own, then that into
 *                                            PATH; exits at the guest's end
 *   relay pty - LINK -- GUEST...             a new pty (raw, no echo), its slave linked at
 *                                            LINK as socat's PTY,link= does; the guest's
 *                                            stdout read into one buffer and written to the
 *                                            non-blocking master, poll(2) for room
 *   relay fanout tcp PORT LIVE STALLED -- GUEST...
 *                                            one read, a blocking send to every live client:
 *                                            lossless, the guest waits for the slowest (the
 *                                            bench shows it, it decides nothing)
 *   relay fanout-tee tcp PORT LIVE STALLED -- GUEST...
 *                                            chardev's fan-out rules: tee(2) into a 256 KiB
 *                                            pipe per client; the first (the writer) takes
 *                                            what leaves the guest's pipe, so it holds the
 *                                            guest; the others take what fits and miss the
 *                                            rest; splice(2) each pipe to its socket
 *   relay fanout-ring tcp PORT LIVE STALLED -- GUEST...
 *                                            the same rules by copy: one read from the guest
 *                                            into a ring, one send per client from its place
 *                                            in the ring; the writer at most 256 KiB behind
 *                                            the guest (so it holds the guest), each viewer at
 *                                            most 256 KiB behind, missing what falls further
 *   (fanout-tee and fanout-ring send each viewer chardev's read-only notice as it is accepted)
 *
 * Lossless to the connected client (the writer) everywhere; no pacing anywhere. Errors go to
 * stderr, exit status 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

/* The guest's pipe, as chardev's (`guestPipe`, F_SETPIPE_SZ) and relay.py's. */
#define GUEST_PIPE_BYTES (1 << 20)
/* chardev's per-client pipe on the fan-out path (src/core/chardev.ts). */
#define CLIENT_PIPE_BYTES (256 * 1024)
/* Most asked of one splice or tee: the pipes' room bounds what moves. */
#define CHUNK (16 << 20)

static void die(const char *what) {
  fprintf(stderr, "relay (C): %s: %s\n", what, strerror(errno));
  exit(1);
}

static void fail(const char *what) {
  fprintf(stderr, "relay (C): %s\n", what);
  exit(1);
}

static void nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("O_NONBLOCK");
}

static void wait_for(int fd, short events) {
  struct pollfd p = {.fd = fd, .events = events};
  while (poll(&p, 1, -1) < 0)
    if (errno != EINTR) die("poll");
}

/*
 * The guest with one end of a 1 MiB pipe as its stdout (out) or stdin (!out); returns our
 * end. Our end alone is made non-blocking by the callers that want it: the two ends are
 * separate open files, so the guest keeps a blocking one.
 */
static int spawn_guest(char **argv, int out) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) die("pipe2");
  if (fcntl(p[0], F_SETPIPE_SZ, GUEST_PIPE_BYTES) < 0) die("F_SETPIPE_SZ");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    /* An ignored SIGPIPE would survive exec: the guest gets the default, as a shell starts it. */
    signal(SIGPIPE, SIG_DFL);
    if (dup2(out ? p[1] : p[0], out ? 1 : 0) < 0) _exit(127);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(out ? p[1] : p[0]);
  return out ? p[0] : p[1];
}

static int listen_on(const char *kind, const char *addr, int backlog) {
  int s;
  if (strcmp(kind, "tcp") == 0) {
    s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket");
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(addr)), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  } else if (strcmp(kind, "unix") == 0) {
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket");
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(addr) >= sizeof a.sun_path) fail("the socket path is too long");
    strcpy(a.sun_path, addr);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  } else {
    fail("kind: tcp or unix");
  }
  if (listen(s, backlog) < 0) die("listen");
  return s;
}

static int accept_one(int srv) {
  int c;
  while ((c = accept4(srv, NULL, NULL, SOCK_CLOEXEC)) < 0)
    if (errno != EINTR) die("accept");
  return c;
}

/*
 * src -> dst by splice(2), one of them a pipe, until src ends. Non-blocking: a blocking
 * splice from a TCP socket waits to fill the whole request, holding back bytes already there.
 * On EAGAIN, wait for room in dst, then for bytes in src, so nothing spins.
 */
static void pump(int src, int dst) {
  nonblocking(src);
  nonblocking(dst);
  for (;;) {
    ssize_t n = splice(src, NULL, dst, NULL, CHUNK, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (n == 0) return;
    if (n > 0) continue;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) die("splice");
    wait_for(dst, POLLOUT);
    wait_for(src, POLLIN);
  }
}

/* Exactly n bytes from the pipe `from` to `to` by splice, waiting for room in `to` as needed. */
static void splice_all(int from, int to, size_t n) {
  while (n > 0) {
    ssize_t k = splice(from, NULL, to, NULL, n, SPLICE_F_MOVE);
    if (k < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) die("splice");
      wait_for(to, POLLOUT);
      continue;
    }
    if (k == 0) fail("splice: the pipe ended early");
    n -= (size_t)k;
  }
}

static void write_all(int fd, const char *buf, size_t n) {
  while (n > 0) {
    ssize_t k = write(fd, buf, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) die("write");
      wait_for(fd, POLLOUT);
      continue;
    }
    buf += k;
    n -= (size_t)k;
  }
}

static char *buffer(void) {
  char *b = malloc(GUEST_PIPE_BYTES);
  if (b == NULL) fail("out of memory");
  return b;
}

static ssize_t read_some(int fd, char *buf, size_t n) {
  for (;;) {
    ssize_t k = read(fd, buf, n);
    if (k >= 0 || errno != EINTR) return k;
  }
}

static int open_log(const char *file) {
  int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) die("open the log");
  return fd;
}

/*
 * The <log> floor without a user-space copy, as chardev's thread does it: tee what the
 * guest's pipe holds into a scratch pipe, splice that into the log (the log is at most one
 * tee ahead of the client), then splice the same bytes from the guest's pipe to the client.
 */
static void log_tee(int src, int sock, int log) {
  int scratch[2];
  if (pipe2(scratch, O_CLOEXEC) < 0) die("pipe2");
  if (fcntl(scratch[1], F_SETPIPE_SZ, GUEST_PIPE_BYTES) < 0) die("F_SETPIPE_SZ");
  nonblocking(sock);
  for (;;) {
    ssize_t k = tee(src, scratch[1], CHUNK, 0);
    if (k < 0) {
      if (errno == EINTR) continue;
      die("tee");
    }
    if (k == 0) return;
    splice_all(scratch[0], log, (size_t)k);
    splice_all(src, sock, (size_t)k);
  }
}

/*
 * The <log> floor by copy, as the Python logging relay does it: read what the guest's pipe
 * holds into one 1 MiB buffer (the pipe's size), write it all to the log, then send it all
 * to the client (the log is at most one read ahead of the client).
 */
static void log_copy(int src, int sock, int log) {
  char *buf = buffer();
  nonblocking(sock);
  for (;;) {
    ssize_t k = read_some(src, buf, GUEST_PIPE_BYTES);
    if (k < 0) die("read");
    if (k == 0) return;
    write_all(log, buf, (size_t)k);
    write_all(sock, buf, (size_t)k);
  }
}

/*
 * A file as chardev's thread writes one: splice what the guest's pipe holds into a pipe of
 * the relay's own (the pages move, nothing is copied, the guest's pipe is locked only for
 * that), then splice it all into the file (the one copy, into the page cache) while the
 * guest refills its pipe.
 */
static void file_pipe(int src, const char *file) {
  int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) die("open the file");
  int own[2];
  if (pipe2(own, O_CLOEXEC) < 0) die("pipe2");
  if (fcntl(own[1], F_SETPIPE_SZ, GUEST_PIPE_BYTES) < 0) die("F_SETPIPE_SZ");
  nonblocking(src);
  for (;;) {
    ssize_t k = splice(src, NULL, own[1], NULL, GUEST_PIPE_BYTES, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (k == 0) break;
    if (k < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) die("splice");
      wait_for(src, POLLIN);
      continue;
    }
    splice_all(own[0], fd, (size_t)k);
  }
  if (close(fd) < 0) die("close the file");
}

/* A new pty, raw and without echo, its slave linked at `link`; returns the master. The slave stays open, as openpty(3) leaves it. */
static int new_pty(const char *link) {
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) die("posix_openpt");
  if (grantpt(master) < 0 || unlockpt(master) < 0) die("grantpt/unlockpt");
  const char *name = ptsname(master);
  if (name == NULL) die("ptsname");
  int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) die("open the slave");
  struct termios t;
  if (tcgetattr(slave, &t) < 0) die("tcgetattr");
  cfmakeraw(&t);
  t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
  if (tcsetattr(slave, TCSANOW, &t) < 0) die("tcsetattr");
  if (symlink(name, link) < 0) die("symlink");
  return master;
}

static void pty_relay(int src, int master) {
  char *buf = buffer();
  nonblocking(master);
  for (;;) {
    ssize_t n = read_some(src, buf, GUEST_PIPE_BYTES);
    if (n < 0) die("read");
    if (n == 0) return;
    write_all(master, buf, (size_t)n);
  }
}

static void fanout_copy(int src, const int *socks, int live) {
  char *buf = buffer();
  for (;;) {
    ssize_t n = read_some(src, buf, GUEST_PIPE_BYTES);
    if (n < 0) die("read");
    if (n == 0) return;
    for (int i = 0; i < live; i++) write_all(socks[i], buf, (size_t)n);
  }
}

struct out {
  int sock, r, w;
  /* Bytes in the pipe, not yet in the socket. */
  size_t held;
  /* The socket failed (its reader left): it gets nothing more. */
  int gone;
};

/* Each pipe into its socket as far as the socket takes it. */
static void flush(struct out *o, int n) {
  for (int i = 0; i < n; i++) {
    while (o[i].held > 0 && !o[i].gone) {
      ssize_t k = splice(o[i].r, NULL, o[i].sock, NULL, o[i].held, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
      if (k > 0) {
        o[i].held -= (size_t)k;
        continue;
      }
      if (k < 0 && errno == EINTR) continue;
      if (k < 0 && errno == EAGAIN) break;
      if (i == 0) die("splice to the writer");
      o[i].gone = 1;
    }
  }
}

static void fanout_tee(int src, const int *socks, int n) {
  struct out *o = calloc((size_t)n, sizeof *o);
  struct pollfd *p = calloc((size_t)n + 1, sizeof *p);
  if (o == NULL || p == NULL) fail("out of memory");
  int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null < 0) die("open /dev/null");
  nonblocking(src);
  for (int i = 0; i < n; i++) {
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) die("pipe2");
    if (fcntl(fds[1], F_SETPIPE_SZ, CLIENT_PIPE_BYTES) < 0) die("F_SETPIPE_SZ");
    o[i] = (struct out){.sock = socks[i], .r = fds[0], .w = fds[1]};
    nonblocking(socks[i]);
  }
  for (;;) {
    ssize_t k = tee(src, o[0].w, CHUNK, SPLICE_F_NONBLOCK);
    if (k < 0 && errno != EAGAIN && errno != EINTR) die("tee");
    if (k == 0) return;
    if (k > 0) {
      o[0].held += (size_t)k;
      for (int i = 1; i < n; i++) {
        if (o[i].gone) continue;
        ssize_t t = tee(src, o[i].w, (size_t)k, SPLICE_F_NONBLOCK);
        if (t > 0) o[i].held += (size_t)t;
      }
      splice_all(src, null, (size_t)k);
    }
    flush(o, n);
    if (k > 0) continue;
    /* Nothing taken: the guest's pipe is empty, or the writer's pipe is full (the writer
       holds the guest). Sleep until the guest writes or a socket with bytes to go has room. */
    int waiting = 0, m = 0;
    if (o[0].held > 0 && ioctl(src, FIONREAD, &waiting) < 0) die("FIONREAD");
    if (o[0].held == 0 || waiting == 0) p[m++] = (struct pollfd){.fd = src, .events = POLLIN};
    for (int i = 0; i < n; i++)
      if (o[i].held > 0 && !o[i].gone) p[m++] = (struct pollfd){.fd = o[i].sock, .events = POLLOUT};
    while (poll(p, (nfds_t)m, -1) < 0)
      if (errno != EINTR) die("poll");
  }
}

/*
 * chardev's fan-out rules with user-space copies instead of tee(2): the stream goes once into
 * a ring, each client has a place in it. The writer's queue (head - its place) is at most
 * QUEUE bytes, as its pipe would hold, and the guest is read only while it has room; a
 * viewer further behind than QUEUE misses the bytes in between, as its full pipe would.
 */
#define QUEUE CLIENT_PIPE_BYTES
#define RING (2 * QUEUE)
static void fanout_ring(int src, const int *socks, int n) {
  char *ring = malloc(RING);
  unsigned long long *at = calloc((size_t)n, sizeof *at);
  char *gone = calloc((size_t)n, 1);
  struct pollfd *p = calloc((size_t)n + 1, sizeof *p);
  if (ring == NULL || at == NULL || gone == NULL || p == NULL) fail("out of memory");
  unsigned long long head = 0;
  int eof = 0;
  nonblocking(src);
  for (int i = 0; i < n; i++) nonblocking(socks[i]);
  for (;;) {
    int moved = 0;
    /* Read only into the writer's room (at most QUEUE behind), never past the ring's end in one read. */
    size_t room = QUEUE - (size_t)(head - at[0]);
    if (!eof && room > 0) {
      size_t off = (size_t)(head % RING);
      size_t want = room < RING - off ? room : RING - off;
      ssize_t k = read(src, ring + off, want);
      if (k == 0) eof = 1;
      else if (k > 0) {
        head += (unsigned long long)k;
        moved = 1;
        for (int i = 1; i < n; i++)
          if (head - at[i] > QUEUE) at[i] = head - QUEUE;
      } else if (errno != EAGAIN && errno != EINTR) die("read");
    }
    for (int i = 0; i < n; i++) {
      while (at[i] < head && !gone[i]) {
        size_t off = (size_t)(at[i] % RING);
        size_t len = (size_t)(head - at[i]);
        if (len > RING - off) len = RING - off;
        ssize_t k = send(socks[i], ring + off, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0) {
          at[i] += (unsigned long long)k;
          moved = 1;
          continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EAGAIN) break;
        if (i == 0) die("send to the writer");
        gone[i] = 1;
      }
    }
    if (eof && at[0] == head) return;
    if (moved) continue;
    int m = 0;
    if (!eof && head - at[0] < QUEUE) p[m++] = (struct pollfd){.fd = src, .events = POLLIN};
    for (int i = 0; i < n; i++)
      if (at[i] < head && !gone[i]) p[m++] = (struct pollfd){.fd = socks[i], .events = POLLOUT};
    while (poll(p, (nfds_t)m, -1) < 0)
      if (errno != EINTR) die("poll");
  }
}

int main(int argc, char **argv) {
  int dash = 0;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--") == 0) {
      dash = i;
      break;
    }
  if (argc < 4 || dash < 4 || dash + 1 >= argc) fail("usage: relay MODE KIND ADDR [LOG | LIVE STALLED] -- GUEST...");
  signal(SIGPIPE, SIG_IGN);
  const char *mode = argv[1], *kind = argv[2], *addr = argv[3];
  char **guest = argv + dash + 1;

  if (strcmp(mode, "file-pipe") == 0) {
    file_pipe(spawn_guest(guest, 1), addr);
    wait(NULL);
    return 0;
  }
  if (strcmp(mode, "pty") == 0) {
    int master = new_pty(addr);
    pty_relay(spawn_guest(guest, 1), master);
    return 0;
  }
  if (strncmp(mode, "fanout", 6) == 0) {
    if (dash != 6) fail("usage: relay fanout|fanout-tee|fanout-ring tcp PORT LIVE STALLED -- GUEST...");
    int live = atoi(argv[4]), stalled = atoi(argv[5]);
    if (live < 1 || stalled < 0) fail("LIVE must be at least 1");
    int src = spawn_guest(guest, 1);
    int srv = listen_on(kind, addr, 128);
    int *socks = calloc((size_t)(live + stalled), sizeof *socks);
    if (socks == NULL) fail("out of memory");
    /*
     * Under chardev's rules a viewer is told at attach that another client is the writer
     * (src/core/hub.ts), before any guest byte: the same bytes on the wire here, so that both
     * sides' viewers start alike (a first small segment changes how loopback TCP paces what
     * follows, measured: docs/performance-notes.md, fan-out).
     */
    int rules = strcmp(mode, "fanout-tee") == 0 || strcmp(mode, "fanout-ring") == 0;
    char notice[160];
    int noticeLen = 0;
    for (int i = 0; i < live + stalled; i++) {
      socks[i] = accept_one(srv);
      if (i == 0) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        if (getpeername(socks[0], (struct sockaddr *)&peer, &len) < 0) die("getpeername");
        noticeLen = snprintf(notice, sizeof notice, "\r\n[chardev: read-only: 127.0.0.1:%u is the writer (attach with force to take over)]\r\n", ntohs(peer.sin_port));
      } else if (rules && send(socks[i], notice, (size_t)noticeLen, MSG_NOSIGNAL) != (ssize_t)noticeLen)
        die("send the notice");
    }
    close(srv);
    if (strcmp(mode, "fanout-tee") == 0)
      fanout_tee(src, socks, live + stalled);
    else if (strcmp(mode, "fanout-ring") == 0)
      fanout_ring(src, socks, live + stalled);
    else if (strcmp(mode, "fanout") == 0)
      fanout_copy(src, socks, live);
    else
      fail("unknown mode");
    return 0;
  }
  int out = strcmp(mode, "in") != 0;
  int guest_end = spawn_guest(guest, out);
  int srv = listen_on(kind, addr, 1);
  int conn = accept_one(srv);
  close(srv);
  if (strcmp(mode, "out") == 0) {
    pump(guest_end, conn);
  } else if (strcmp(mode, "in") == 0) {
    pump(conn, guest_end);
    close(guest_end);
    wait(NULL);
  } else if (strcmp(mode, "log-tee") == 0) {
    if (dash != 5) fail("usage: relay log-tee tcp|unix ADDR LOG -- GUEST...");
    log_tee(guest_end, conn, open_log(argv[4]));
  } else if (strcmp(mode, "log-copy") == 0) {
    if (dash != 5) fail("usage: relay log-copy tcp|unix ADDR LOG -- GUEST...");
    log_copy(guest_end, conn, open_log(argv[4]));
  } else {
    fail("unknown mode");
  }
  return 0;
}
