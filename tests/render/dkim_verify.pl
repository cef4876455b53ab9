#!/usr/bin/perl
# Independent DKIM verifier for the tests: Mail::DKIM with DNS answered from the arguments.
# Usage: dkim_verify.pl NAME=TXT... < message   Prints one line per signature, then result=.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS;

my %txt;
for my $arg (@ARGV) {
    my ($name, $value) = split(/=/, $arg, 2);
    $txt{lc $name} = $value;
}
{
    no warnings 'redefine';
    *Mail::DKIM::DNS::query = sub {
        my ($domain, $type) = @_;
        my $value = $txt{lc $domain};
        return () unless defined $value && $type eq 'TXT';
        my @chunks = ($value =~ /(.{1,255})/gs);
        return (Net::DNS::RR->new(name => $domain, type => 'TXT', txtdata => \@chunks));
    };
}
my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) {
    $line =~ s/\r?\n\z/\015\012/;
    $dkim->PRINT($line);
}
$dkim->CLOSE;
for my $sig ($dkim->signatures) {
    printf "%s %s %s %s\n", $sig->domain, $sig->selector, $sig->algorithm, $sig->result_detail;
}
print "result=", $dkim->result, "\n";
