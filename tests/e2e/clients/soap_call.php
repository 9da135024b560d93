<?php
// Calls apiserver over SOAP the way ApisCP's PHP clients do, for the end-to-end tests.
// stdin: {"mode": "wsdl"|"nonwsdl", "wsdl": URL, "location": URL, "cookie": SID|null,
//         "calls": [[operation, [positional args...]], ...]}
// stdout: a JSON list, one {"ok": result} or {"fault": faultcode, "message": faultstring} per call.
$job = json_decode(stream_get_contents(STDIN), true);
$options = ["location" => $job["location"], "exceptions" => true, "cache_wsdl" => WSDL_CACHE_NONE,
            "connection_timeout" => 10];
if ($job["mode"] === "wsdl") {
    $client = new SoapClient($job["wsdl"], $options);
} else {
    $options["uri"] = "urn:net.apnscp.soap";
    $client = new SoapClient(null, $options);
}
if (!empty($job["cookie"])) {
    $client->__setCookie("esprit_id", $job["cookie"]);
}
$out = [];
foreach ($job["calls"] as [$operation, $args]) {
    try {
        $out[] = ["ok" => $client->__soapCall($operation, $args)];
    } catch (SoapFault $fault) {
        $out[] = ["fault" => $fault->faultcode, "message" => $fault->getMessage()];
    }
}
echo json_encode($out), "\n";
