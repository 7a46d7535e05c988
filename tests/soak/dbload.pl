#!/usr/bin/env perl
# Database load for the soak test, from one long-lived Perl process with the
# real client libraries (DBI + DBD::Pg, Redis.pm). It listens on LISTEN_PORT
# only so that rastro can select it by port before it sends anything, prints
# "ready", waits for a line on stdin, then for SECONDS sends at fixed rates:
#   PostgreSQL: SELECT name FROM products WHERE id = ?  (PG_RATE per second)
#   Redis:      SET soak:<n> <value>, then GET soak:<n> (REDIS_RATE commands
#               per second, SET and GET alternating)
# and prints its own counts as JSON: {"pg": n, "redis_set": n, "redis_get": n,
# "late": n} ("late": sends more than 100 ms behind schedule).
#   perl dbload.pl LISTEN_PORT PG_PORT REDIS_PORT PG_RATE REDIS_RATE SECONDS
use strict;
use warnings;
use DBI;
use IO::Socket::INET;
use Redis;
use Time::HiRes qw(time sleep);

my ($listen_port, $pg_port, $redis_port, $pg_rate, $redis_rate, $seconds) = @ARGV;
my $ls = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $listen_port,
                               Listen => 1, ReuseAddr => 1) or die "listen: $!";
$| = 1;
print "ready\n";
<STDIN>;

my $pg = DBI->connect("dbi:Pg:dbname=shop;host=127.0.0.1;port=$pg_port", 'postgres', '',
                      { RaiseError => 1, PrintError => 0, AutoCommit => 1 });
my $sth = $pg->prepare('SELECT name FROM products WHERE id = ?', { pg_server_prepare => 0 });
my $redis = Redis->new(server => "127.0.0.1:$redis_port", reconnect => 0);

my %n = (pg => 0, redis_set => 0, redis_get => 0, late => 0);
my $start = time;
my $end = $start + $seconds;
my ($next_pg, $next_redis) = ($start, $start);
my ($pg_step, $redis_step) = (1 / $pg_rate, 1 / $redis_rate);
while (1) {
    my $now = time;
    last if $now >= $end;
    if ($next_pg <= $now) {
        $n{late}++ if $now - $next_pg > 0.1;
        $sth->execute(1 + $n{pg} % 3);
        $sth->fetchall_arrayref;
        $n{pg}++;
        $next_pg += $pg_step;
        next;
    }
    if ($next_redis <= $now) {
        $n{late}++ if $now - $next_redis > 0.1;
        my $i = $n{redis_set};
        if ($n{redis_set} == $n{redis_get}) {
            $redis->set("soak:" . ($i % 1000), "v$i");
            $n{redis_set}++;
        } else {
            $redis->get("soak:" . (($i - 1) % 1000));
            $n{redis_get}++;
        }
        $next_redis += $redis_step;
        next;
    }
    my $wait = ($next_pg < $next_redis ? $next_pg : $next_redis) - $now;
    sleep($wait) if $wait > 0;
}
$pg->disconnect;
$redis->quit;
printf "{\"pg\": %d, \"redis_set\": %d, \"redis_get\": %d, \"late\": %d}\n",
    $n{pg}, $n{redis_set}, $n{redis_get}, $n{late};
