#!/usr/bin/env perl
use Mojolicious::Lite;

# Endpoint simples de "health check"
get '/' => sub {
    my $c = shift;
    $c->render(text => 'Hello, eBPF + Beyla + Perl!');
};

# Endpoint que simula uma consulta (para detecção heurística de SQL)
get '/products' => sub {
    my $c = shift;
    # A resposta JSON simula o que um banco de dados retornaria
    $c->render(json => { products => [ "book", "pen", "laptop" ] });
};

# Inicia o servidor na porta 1337
app->start('daemon', '-l', 'http://*:1337');
