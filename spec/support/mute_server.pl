# A TCP listener on a loopback address that never answers like a server
# should, for the connect timeout specs (through spec/support/net.lua):
#   perl mute_server.pl silent ADDR PORT   listens, never accepts: the TCP
#                                          connect succeeds, nothing is said
#   perl mute_server.pl login ADDR PORT    speaks MySQL up to a successful
#                                          login (any password), then never
#                                          answers a statement
# PORT 0 takes a free one. Prints "PORT PID" and returns; the listener runs
# in the background for at most 120 s (kill PID to end it sooner).
use strict;
use warnings;
use Socket;

my ($mode, $addr, $port) = @ARGV;
die "usage: mute_server.pl silent|login ADDR PORT\n" unless defined $port && $mode =~ /^(silent|login)$/;
socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
setsockopt($s, SOL_SOCKET, SO_REUSEADDR, 1);
bind($s, pack_sockaddr_in($port, inet_aton($addr))) or die "bind $addr:$port: $!";
listen($s, 16) or die "listen: $!";
($port) = unpack_sockaddr_in(getsockname($s));
my $pid = fork() // die "fork: $!";
if ($pid) { print "$port $pid\n"; exit 0 }
close STDOUT;
alarm 120;
if ($mode eq 'silent') { sleep 120; exit 0 }

sub packet { my ($seq, $payload) = @_; substr(pack("V", length $payload), 0, 3) . pack("C", $seq) . $payload }

sub read_packet {
  my ($c) = @_;
  my $head = '';
  while (length $head < 4) { sysread($c, $head, 4 - length $head, length $head) or return }
  my $len = unpack("V", substr($head, 0, 3) . "\0");
  my $body = '';
  while (length $body < $len) { sysread($c, $body, $len - length $body, length $body) or return }
  return (unpack("C", substr($head, 3, 1)), $body);
}

# Protocol 10 greeting: 4.1 protocol, secure connection, plugin auth
# (mysql_native_password), with a database; no TLS offered.
my $greeting = pack("C", 10) . "5.5.5-10.11.0-mute\0" . pack("V", 7) . "abcdefgh" . "\0"
  . pack("v", 0xA209) . pack("C", 45) . pack("v", 2) . pack("v", 0x0008) . pack("C", 21)
  . ("\0" x 10) . "ijklmnopqrst" . "\0" . "mysql_native_password\0";
my $ok = "\0\0\0" . pack("v", 2) . pack("v", 0);
my @keep;
while (accept(my $c, $s)) {
  syswrite($c, packet(0, $greeting));
  my ($seq) = read_packet($c);
  syswrite($c, packet($seq + 1, $ok)) if defined $seq;
  push @keep, $c; # open and mute from here on
}
