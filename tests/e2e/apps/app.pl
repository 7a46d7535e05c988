#!/usr/bin/env perl
# The seed's Perl/Mojolicious app, plus routes the tests need. Usage:
#   perl app.pl PORT
use Mojolicious::Lite;
use Time::HiRes ();

my $port = shift @ARGV || 1337;

get '/' => sub {
    my $c = shift;
    $c->render(text => 'Hello, eBPF + Beyla + Perl!');
};

get '/products' => sub {
    my $c = shift;
    $c->render(json => { products => [ "book", "pen", "laptop" ] });
};

# Test additions
get '/slow' => sub {
    my $c = shift;
    Time::HiRes::sleep(0.2);
    $c->render(text => 'slow');
};

get '/status/:code' => sub {
    my $c = shift;
    $c->render(text => 'status ' . $c->param('code'), status => $c->param('code'));
};

get '/fail' => sub {
    my $c = shift;
    $c->render(text => 'boom', status => 500);
};

get '/users/:id' => sub {
    my $c = shift;
    $c->render(json => { id => $c->param('id') });
};

post '/echo' => sub {
    my $c = shift;
    $c->render(data => $c->req->body);
};

# Calls another service (a blocking client call made by the serving thread).
get '/call' => sub {
    my $c = shift;
    my $res = Mojo::UserAgent->new->get($c->param('url'))->result;
    $c->render(text => 'downstream ' . $res->code);
};

# Closes the connection without answering.
get '/close' => sub {
    my $c = shift;
    Mojo::IOLoop->stream($c->tx->connection)->close;
};

# A chunked response written in several separate writes. With delay=MS, each
# chunk after the first, and the final 0-chunk, is written MS milliseconds
# after the previous one (n delays in all).
get '/chunked' => sub {
    my $c = shift;
    my $n = $c->param('n') // 5;
    my $delay = ($c->param('delay') // 0) / 1000;
    my $i = 0;
    my $next;
    $next = sub {
        my $chunk = $i++ < $n ? ('x' x 100) . "\n" : '';
        my $write = sub { $chunk eq '' ? $c->write_chunk('') : $c->write_chunk($chunk, $next) };
        if ($delay && $i > 1) {
            Mojo::IOLoop->timer($delay => $write);
        } else {
            $write->();
        }
    };
    $next->();
};

# A large Content-Length response: the server writes it in many pieces.
get '/big' => sub {
    my $c = shift;
    my $size = $c->param('size') // 1000000;
    $c->render(data => 'y' x $size);
};

my $listen = $ENV{APP_LISTEN} // "http://127.0.0.1:$port";
app->start('daemon', '-l', $listen);
