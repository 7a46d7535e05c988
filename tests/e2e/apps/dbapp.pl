#!/usr/bin/env perl
# A legacy-style Perl web app that talks to databases: Mojolicious + DBI
# (DBD::Pg, DBD::MariaDB) and the Redis client from libredis-perl. Every
# endpoint runs known statements on the thread serving the HTTP request.
#   perl dbapp.pl HTTP_PORT PG_PORT MARIADB_PORT REDIS_PORT
# Connections are made on first use (after rastro is watching), except for
# /pg/early's, made at start-up (before rastro is watching).
use Mojolicious::Lite;
use DBI;
use Redis;

my ($port, $pg_port, $my_port, $redis_port) = @ARGV;

my ($pg, $maria, $maria_ps, $redis, $pg_early);

sub pg {
    $pg //= DBI->connect("dbi:Pg:dbname=shop;host=127.0.0.1;port=$pg_port", 'postgres', '',
                         { RaiseError => 1, PrintError => 0, AutoCommit => 1 });
}

# Client-side placeholders (DBD::MariaDB's default): values travel inside COM_QUERY.
sub maria {
    $maria //= DBI->connect("dbi:MariaDB:database=shop;host=127.0.0.1;port=$my_port", 'app',
                         'secret', { RaiseError => 1, PrintError => 0, AutoCommit => 1 });
}

# Server-side prepared statements: COM_STMT_PREPARE / COM_STMT_EXECUTE.
sub maria_ps {
    $maria_ps //= DBI->connect(
        "dbi:MariaDB:database=shop;host=127.0.0.1;port=$my_port;mariadb_server_prepare=1",
        'app', 'secret', { RaiseError => 1, PrintError => 0, AutoCommit => 1 });
}

sub redis {
    $redis //= do {
        my $r = Redis->new(server => "127.0.0.1:$redis_port", reconnect => 0);
        $r->select(2);
        $r;
    };
}

# A connection opened before rastro starts: its startup is never seen.
$pg_early = DBI->connect("dbi:Pg:dbname=shop;host=127.0.0.1;port=$pg_port", 'postgres', '',
                         { RaiseError => 1, PrintError => 0, AutoCommit => 1 });

sub rows { my $c = shift; $c->render(json => { rows => shift }) }

get '/pg/products' => sub {
    my $c = shift;
    rows($c, pg()->selectall_arrayref(
        "SELECT id, name FROM products WHERE name = 'book' OR price > 100 ORDER BY id"));
};

get '/pg/product/:id' => sub {
    my $c = shift;
    my $sth = pg()->prepare_cached('SELECT name, price FROM products WHERE id = ?');
    $sth->execute($c->param('id'));
    rows($c, $sth->fetchall_arrayref);
};

get '/pg/order' => sub {
    my $c = shift;
    pg()->do('INSERT INTO orders (product_id, qty) VALUES (?, ?)', undef, 1, 3);
    $c->render(text => 'ordered');
};

get '/pg/fail' => sub {
    my $c = shift;
    eval { pg()->selectall_arrayref('SELECT * FROM missing_table') };
    $c->render(text => 'failed: ' . ($DBI::state // ''), status => 500);
};

get '/pg/big' => sub {
    my $c = shift;
    my $all = pg()->selectall_arrayref('SELECT id, payload FROM big ORDER BY id');
    $c->render(text => scalar(@$all));
};

get '/pg/bigquery' => sub {
    my $c = shift;
    my $long = 'x' x (1024 * 1024);
    my ($n) = pg()->selectrow_array("SELECT count(*) FROM products WHERE name <> '$long'");
    $c->render(text => $n);
};

get '/pg/early' => sub {
    my $c = shift;
    rows($c, $pg_early->selectall_arrayref('SELECT id FROM products WHERE id = 3'));
};

get '/my/products' => sub {
    my $c = shift;
    rows($c, maria()->selectall_arrayref(
        "SELECT id, name FROM products WHERE name = 'book' OR price > 100 ORDER BY id"));
};

get '/my/product/:id' => sub {
    my $c = shift;
    my $sth = maria_ps()->prepare_cached('SELECT name, price FROM products WHERE id = ?');
    $sth->execute($c->param('id'));
    rows($c, $sth->fetchall_arrayref);
};

get '/my/order' => sub {
    my $c = shift;
    maria()->do('INSERT INTO orders (product_id, qty) VALUES (?, ?)', undef, 2, 5);
    $c->render(text => 'ordered');
};

get '/my/fail' => sub {
    my $c = shift;
    eval { maria()->selectall_arrayref('SELECT * FROM missing_table') };
    $c->render(text => 'failed: ' . ($DBI::state // ''), status => 500);
};

get '/my/big' => sub {
    my $c = shift;
    my $all = maria()->selectall_arrayref('SELECT id, payload FROM big ORDER BY id');
    $c->render(text => scalar(@$all));
};

get '/my/bigquery' => sub {
    my $c = shift;
    my $long = 'x' x (1024 * 1024);
    my ($n) = maria()->selectrow_array("SELECT count(*) FROM products WHERE name <> '$long'");
    $c->render(text => $n);
};

# Five commands written before any reply is read, one of them failing.
get '/redis/pipeline' => sub {
    my $c = shift;
    my $r = redis();
    my @out;
    my $keep = sub { my ($v, $err) = @_; push @out, $err ? "error: $err" : $v };
    $r->set('greeting', 'hello', $keep);
    $r->incr('visits', $keep);
    $r->get('greeting', $keep);
    $r->hget('greeting', 'field', $keep);  # WRONGTYPE: greeting is a string
    $r->del('visits', $keep);
    $r->wait_all_responses;
    $c->render(json => \@out);
};

app->log->level('warn');
app->start('daemon', '-l', "http://127.0.0.1:$port");
