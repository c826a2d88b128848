/*
 * LD_PRELOAD shim for Libreswan's pluto on a kernel without ESP support.
 *
 * The kernel has XFRM netlink but no ESP type, so XFRM_MSG_NEWSA fails with
 * EPROTONOSUPPORT and pluto drops the IKE SA it has just negotiated. This
 * shim answers pluto's requests that install or remove SAs and policies
 * (NEWSA, UPDSA, DELSA, NEWPOLICY, UPDPOLICY, DELPOLICY, FLUSHSA,
 * FLUSHPOLICY) on its NETLINK_XFRM sockets with a success ACK, without
 * passing them to the kernel; everything else (ALLOCSPI, GETSA, …) goes to
 * the kernel as usual. pluto then negotiates, rekeys, runs liveness and
 * deletes for real; there is no data plane. Used only by the interop tests
 * (interop-tests/src/libreswan.rs compiles it with `cc`).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <linux/netlink.h>
#include <linux/xfrm.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 4096
#define ACK_LEN (NLMSG_LENGTH(sizeof(struct nlmsgerr)))

static unsigned char is_xfrm[MAX_FD];
/* One pending ACK per socket: pluto waits for each answer before sending. */
static unsigned char pending[MAX_FD][NLMSG_ALIGN(ACK_LEN)];
static unsigned char has_pending[MAX_FD];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

#define REAL(name) static __typeof__(name) *real_##name; \
	if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

int socket(int domain, int type, int protocol)
{
	REAL(socket);
	int fd = real_socket(domain, type, protocol);
	if (fd >= 0 && fd < MAX_FD) {
		pthread_mutex_lock(&lock);
		is_xfrm[fd] = domain == AF_NETLINK && protocol == NETLINK_XFRM;
		has_pending[fd] = 0;
		pthread_mutex_unlock(&lock);
	}
	return fd;
}

static int answered(uint16_t type)
{
	switch (type) {
	case XFRM_MSG_NEWSA:
	case XFRM_MSG_UPDSA:
	case XFRM_MSG_DELSA:
	case XFRM_MSG_NEWPOLICY:
	case XFRM_MSG_UPDPOLICY:
	case XFRM_MSG_DELPOLICY:
	case XFRM_MSG_FLUSHSA:
	case XFRM_MSG_FLUSHPOLICY:
		return 1;
	default:
		return 0;
	}
}

/* If buf is a request the shim answers, queue the ACK and return 1. */
static int intercept(int fd, const void *buf, size_t len)
{
	if (fd < 0 || fd >= MAX_FD || !is_xfrm[fd] || len < sizeof(struct nlmsghdr))
		return 0;
	const struct nlmsghdr *req = buf;
	if (!answered(req->nlmsg_type))
		return 0;
	struct nlmsghdr ack;
	struct nlmsgerr err;
	memset(&ack, 0, sizeof ack);
	memset(&err, 0, sizeof err);
	ack.nlmsg_len = ACK_LEN;
	ack.nlmsg_type = NLMSG_ERROR;
	ack.nlmsg_seq = req->nlmsg_seq;
	ack.nlmsg_pid = req->nlmsg_pid;
	err.error = 0;
	err.msg = *req;
	pthread_mutex_lock(&lock);
	memset(pending[fd], 0, sizeof pending[fd]);
	memcpy(pending[fd], &ack, sizeof ack);
	memcpy(pending[fd] + NLMSG_HDRLEN, &err, sizeof err);
	has_pending[fd] = 1;
	pthread_mutex_unlock(&lock);
	return 1;
}

/* Copies a pending ACK into buf; returns its length, or -1 if none. */
static ssize_t take(int fd, void *buf, size_t len, struct sockaddr *addr, socklen_t *alen)
{
	if (fd < 0 || fd >= MAX_FD)
		return -1;
	pthread_mutex_lock(&lock);
	if (!has_pending[fd]) {
		pthread_mutex_unlock(&lock);
		return -1;
	}
	size_t n = ACK_LEN < len ? ACK_LEN : len;
	memcpy(buf, pending[fd], n);
	has_pending[fd] = 0;
	pthread_mutex_unlock(&lock);
	if (addr && alen) {
		struct sockaddr_nl nl;
		memset(&nl, 0, sizeof nl);
		nl.nl_family = AF_NETLINK;
		socklen_t c = *alen < sizeof nl ? *alen : sizeof nl;
		memcpy(addr, &nl, c);
		*alen = sizeof nl;
	}
	return (ssize_t)n;
}

ssize_t write(int fd, const void *buf, size_t len)
{
	REAL(write);
	if (intercept(fd, buf, len))
		return (ssize_t)len;
	return real_write(fd, buf, len);
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	REAL(send);
	if (intercept(fd, buf, len))
		return (ssize_t)len;
	return real_send(fd, buf, len, flags);
}

ssize_t sendto(int fd, const void *buf, size_t len, int flags,
	       const struct sockaddr *addr, socklen_t alen)
{
	REAL(sendto);
	if (intercept(fd, buf, len))
		return (ssize_t)len;
	return real_sendto(fd, buf, len, flags, addr, alen);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	REAL(sendmsg);
	if (msg && msg->msg_iovlen == 1 &&
	    intercept(fd, msg->msg_iov[0].iov_base, msg->msg_iov[0].iov_len))
		return (ssize_t)msg->msg_iov[0].iov_len;
	return real_sendmsg(fd, msg, flags);
}

ssize_t read(int fd, void *buf, size_t len)
{
	REAL(read);
	ssize_t n = take(fd, buf, len, NULL, NULL);
	return n >= 0 ? n : real_read(fd, buf, len);
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	REAL(recv);
	ssize_t n = take(fd, buf, len, NULL, NULL);
	return n >= 0 ? n : real_recv(fd, buf, len, flags);
}

ssize_t recvfrom(int fd, void *buf, size_t len, int flags,
		 struct sockaddr *addr, socklen_t *alen)
{
	REAL(recvfrom);
	ssize_t n = take(fd, buf, len, addr, alen);
	return n >= 0 ? n : real_recvfrom(fd, buf, len, flags, addr, alen);
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	REAL(recvmsg);
	if (msg && msg->msg_iovlen >= 1) {
		socklen_t alen = msg->msg_namelen;
		ssize_t n = take(fd, msg->msg_iov[0].iov_base, msg->msg_iov[0].iov_len,
				 msg->msg_name, msg->msg_name ? &alen : NULL);
		if (n >= 0) {
			if (msg->msg_name)
				msg->msg_namelen = alen;
			msg->msg_controllen = 0;
			msg->msg_flags = 0;
			return n;
		}
	}
	return real_recvmsg(fd, msg, flags);
}

int close(int fd)
{
	REAL(close);
	if (fd >= 0 && fd < MAX_FD) {
		pthread_mutex_lock(&lock);
		is_xfrm[fd] = 0;
		has_pending[fd] = 0;
		pthread_mutex_unlock(&lock);
	}
	return real_close(fd);
}
