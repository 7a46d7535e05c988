/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Types shared by the kernel programs (rastro.bpf.c) and the agent.
 * Only fixed-size __uN types, explicit padding, one tag per event type.
 */
#ifndef RASTRO_BPF_SHARED_H
#define RASTRO_BPF_SHARED_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Largest payload copied per syscall. Power of two: offsets are masked with
 * (RASTRO_CAPTURE_MAX - 1) so the verifier can bound every copy. */
#define RASTRO_CAPTURE_MAX 4096
/* Words of the traced-tgid bitmap: one bit for every tgid up to Linux's
 * PID_MAX_LIMIT (4194304 on 64-bit). */
#define RASTRO_TRACED_BITS_WORDS (4194304 / 64)
/* iovecs copied per readv/writev/recvmsg/sendmsg; bytes beyond are counted. */
#define RASTRO_MAX_IOV 128

enum rastro_event_type {
	RASTRO_EV_DATA = 1,   /* bytes moved on a TCP socket by a traced process */
	RASTRO_EV_CLOSE = 2,  /* a tracked connection ended (FIN sent or closed) */
	RASTRO_EV_EXEC = 3,   /* any process called execve */
	RASTRO_EV_FORK = 4,   /* a traced process forked a new process */
	RASTRO_EV_EXIT = 5,   /* a traced process exited */
	RASTRO_EV_LISTEN = 6, /* any process started listening on a TCP port */
	RASTRO_EV_BATCH = 7,  /* data events one CPU held back, delivered together */
	RASTRO_EV_DATA_AFTER = 8, /* a data event to read after a batch (rastro_after_event) */
};

enum rastro_direction {
	RASTRO_DIR_INGRESS = 0, /* the traced process received these bytes */
	RASTRO_DIR_EGRESS = 1,  /* the traced process sent these bytes */
};

/* What the kernel knows about the traced process's side of a connection. */
enum rastro_role {
	RASTRO_ROLE_UNKNOWN = 0, /* connection predates rastro */
	RASTRO_ROLE_SERVER = 1,  /* obtained through accept() */
	RASTRO_ROLE_CLIENT = 2,  /* obtained through connect() */
};

enum rastro_syscall {
	RASTRO_SYS_READ = 1,
	RASTRO_SYS_WRITE,
	RASTRO_SYS_READV,
	RASTRO_SYS_WRITEV,
	RASTRO_SYS_RECVFROM,
	RASTRO_SYS_SENDTO,
	RASTRO_SYS_RECVMSG,
	RASTRO_SYS_SENDMSG,
	RASTRO_SYS_SENDFILE,
	RASTRO_SYS__COUNT,
};

/* Bytes of data events (each with its payload, padded to 8) a CPU holds back
 * for one RASTRO_EV_BATCH record. Power of two: the verifier bounds the
 * offset of the next event with it. */
#define RASTRO_HOLD_BYTES 4096

/* Data event flags. */
#define RASTRO_DATA_F_NO_CONN_STATE (1u << 0) /* conn map full or socket closed: weak conn_id */
#define RASTRO_DATA_F_IOV_LIMIT (1u << 1)     /* more iovecs than copied */

/* Close event flags. */
#define RASTRO_CLOSE_F_LOCAL_FIN (1u << 0) /* this side closed or shut down writing */
#define RASTRO_CLOSE_F_FINAL (1u << 1)     /* socket reached TCP_CLOSE */

/* Per-CPU counters of everything the kernel side could not deliver, indexed
 * by cause. Exported as rastro_ebpf_lost_total{cause=...}. */
enum rastro_loss_cause {
	RASTRO_LOSS_RINGBUF_FULL = 0,   /* a data event did not fit in the ring buffer */
	RASTRO_LOSS_CONN_MAP_FULL,      /* no room to track a new connection */
	RASTRO_LOSS_CONTROL_RINGBUF,    /* a close/exec/fork/exit/listen event did not fit */
	RASTRO_LOSS_TRACED_MAP_FULL,    /* a forked child could not be traced */
	RASTRO_STAT_TRUNCATED,          /* events whose payload was cut at the capture limit */
	RASTRO_STAT_DATA_EVENTS,        /* data events delivered */
	RASTRO_STAT_DATA_RECORDS,       /* ring buffer records that carried them */
	RASTRO_STAT_DATA_MERGED,        /* sendfile()s added to the held event before them */
	RASTRO_STAT_BATCH_TAKEN_OVER,   /* batches delivered by another CPU (rastro.bpf.c) */
	RASTRO_STAT_SENT_AHEAD,         /* events sent ahead of earlier ones held elsewhere */
	RASTRO_STAT_CONN_SETTLED,       /* connections moved to the socket's storage */
	RASTRO_STAT_MUTED,              /* data events of muted connections, not sent */
	RASTRO_STAT__COUNT,
};

struct rastro_tuple {
	__u8 local_addr[16];  /* IPv4 as ::ffff:a.b.c.d */
	__u8 remote_addr[16];
	__u16 local_port;     /* host byte order */
	__u16 remote_port;    /* host byte order */
	__u16 family;         /* AF_INET or AF_INET6 of the socket */
	__u16 _pad;
};

/* Every event starts with this. */
struct rastro_event_hdr {
	__u16 type;   /* enum rastro_event_type */
	__u16 _pad;
	__u32 tgid;
	__u64 ts_ns;  /* bpf_ktime_get_ns() when the event happened */
};

struct rastro_data_event {
	struct rastro_event_hdr hdr;
	__u32 tid;
	__u32 service_id;  /* value of the traced map for this process */
	__u64 conn_id;     /* unique per connection while rastro runs */
	__u32 bytes;       /* bytes the syscall moved */
	__u32 captured;    /* bytes of payload that follow (<= RASTRO_CAPTURE_MAX) */
	__u32 seq;         /* TCP sequence number of the first byte moved */
	__u8 direction;    /* enum rastro_direction */
	__u8 role;         /* enum rastro_role */
	__u8 syscall;      /* enum rastro_syscall */
	__u8 flags;        /* RASTRO_DATA_F_* */
	struct rastro_tuple tuple;
	/* followed by `captured` bytes of payload */
};

/* Events one CPU held back, delivered in one ring buffer record: `count`
 * events, each a struct rastro_data_event followed by its payload or a
 * struct rastro_close_event (hdr.type says which), padded to a multiple of
 * 8 bytes, `len` bytes in all. */
struct rastro_batch_event {
	struct rastro_event_hdr hdr; /* tgid of the first event; ts_ns of the last */
	__u32 count;
	__u32 len;
	__u32 cpu;  /* the CPU that held them (not always the one that delivered them) */
	__u32 gen;  /* that CPU's batch number (see rastro_close_event) */
};

/* A data event sent ahead of batch `gen` of CPU `cpu`, which holds earlier
 * events of its connection: the program that made it could not deliver that
 * batch first (another CPU's program kept it locked through every try). The
 * agent reads the event after that batch. Followed by one struct
 * rastro_data_event and its payload. */
struct rastro_after_event {
	struct rastro_event_hdr hdr;
	__u32 cpu;
	__u32 gen;
};

/* CPUs whose events can be held back: rastro_conn.held_cpu is 16 bits, and
 * the batch numbers of the CPUs are an array of this size. */
#define RASTRO_HOLD_CPUS 1024

struct rastro_close_event {
	struct rastro_event_hdr hdr;
	__u64 conn_id;
	__u32 flags;       /* RASTRO_CLOSE_F_* */
	/* Data of this connection may still be held back by another CPU (a
	 * peer's reset ends it from there): CPU held_cpu - 1, in its batch
	 * held_gen. The agent ends the connection once it has read that batch
	 * (or a later one of that CPU). 0: nothing held elsewhere. */
	__u32 held_cpu;
	__u32 held_gen;
	/* Bytes the peer sent that the process had not read yet when a reset
	 * closed the socket (they stay readable): its later reads come as data
	 * events without connection state whose conn_id is `sock`, the
	 * socket's address. 0: none (every other end). */
	__u32 unread;
	__u64 sock;
};

struct rastro_proc_event {
	struct rastro_event_hdr hdr;
	__u32 pid;         /* EXEC: tgid; FORK: child tgid; EXIT: tgid */
	__u32 ppid;        /* FORK: parent tgid */
	__u32 service_id;  /* FORK/EXIT: the traced entry */
	__u16 port;        /* LISTEN: local port */
	__u16 _pad;
};

/* Value of the traced-process map, keyed by tgid. */
struct rastro_traced {
	__u32 service_id;
	__u32 flags;
};

/* State the kernel keeps per tracked TCP socket, keyed by struct sock *. */
struct rastro_conn {
	__u64 conn_id;
	__u32 tgid;        /* the process that created the entry */
	__u8 role;
	__u8 fin_notified;
	__u16 held_cpu;    /* 1 + the CPU that last held an event of it back, or 0 */
	struct rastro_tuple tuple;
	__u32 service_id;  /* tgid's traced-map value when the entry was made */
	__u32 held_gen;    /* in that CPU's batch number held_gen */
	/* With the socket hooks, a young connection's entry is in the hash
	 * map (cheap to make and free) until its data turns direction a
	 * second time (a second request), then in the socket's storage. */
	__u8 young;        /* in the hash map */
	__u8 last_dir;     /* 1 + the direction of its last data event */
	__u8 turns;        /* changes of direction so far, while young */
	__u8 muted;        /* no known protocol: its data is not sent (the mutes map) */
	__u32 mute_gen;    /* the mutes map was last asked at this mute_gen */
};

#endif
