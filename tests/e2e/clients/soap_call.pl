#!/usr/bin/perl
# Calls apiserver with SOAP::Lite (->proxy->uri, plain positional arguments) for the e2e tests.
# stdin: {"proxy": URL, "cookie": SID|null, "calls": [[operation, [positional args...]], ...]}
# stdout: a JSON list, one {"ok": result} or {"fault": faultcode, "message": faultstring} per call.
# JSON true/false become xsd:boolean values; everything else is left to SOAP::Lite's autotyping.
use strict;
use warnings;
use JSON::PP;
use SOAP::Lite;

local $/;
my $job = JSON::PP->new->decode(<STDIN>);
my $soap = SOAP::Lite->proxy($job->{proxy}, timeout => 10)->uri("urn:net.apnscp.soap");
$soap->transport->http_request->header(Cookie => "esprit_id=$job->{cookie}") if $job->{cookie};

sub soap_arg {
    my ($value) = @_;
    return SOAP::Data->type(boolean => ($value ? "true" : "false")) if JSON::PP::is_bool($value);
    return [map { soap_arg($_) } @$value] if ref $value eq "ARRAY";
    return {map { $_ => soap_arg($value->{$_}) } keys %$value} if ref $value eq "HASH";
    return $value;
}

sub plain {
    my ($value) = @_;
    return [map { plain($_) } @$value] if ref $value eq "ARRAY";
    return {map { $_ => plain($value->{$_}) } keys %$value} if ref $value && eval { %$value; 1 };
    return $value;
}

my @out;
for my $call (@{$job->{calls}}) {
    my ($operation, $args) = @$call;
    my $som = $soap->call($operation => map { soap_arg($_) } @$args);
    if ($som->fault) {
        push @out, {fault => $som->faultcode, message => $som->faultstring};
    } else {
        push @out, {ok => plain($som->result)};
    }
}
print JSON::PP->new->canonical->encode(\@out), "\n";
