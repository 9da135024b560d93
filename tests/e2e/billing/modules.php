<?php
// The calls the billing modules make, with the SoapClient set-up each of them uses, for the
// end-to-end tests (tests/e2e/test_billing_*.py).  Written here from the modules' sources
// (research: /work/notes/billing.md section 3), not copied:
//   WHMCS      LithiumHosting/apiscp-whmcs 1.0.13 (lib/ApisConnector.php, apnscp.php, hooks.php)
//              and 1.0.8's usage sync through hijacked sessions
//   ClientExec clientexec/apiscp-server 6.8.0 (ApisCPAPI.php, PluginApiscp.php)
//   Blesta     blesta/module-apnscp 2.0.1 (apis/apnscp_api.php)
// stdin: {"module": "whmcs"|"clientexec"|"blesta", "action": NAME, "server": {...}, "params": {...}}
// stdout: one JSON object: what the module's function returns or computes, or
//         {"exception": message, "faultcode": code} when it let a SoapFault through.

// --- WHMCS -------------------------------------------------------------------------------------

class WhmcsConnector extends SoapClient
{
    private $id;
    public static $retries = 0;   // re-sent calls (a call answering null is sent again, up to 5 times)

    public static function create_client($api_key, $api_endpoint, ...$ctor)
    {
        $uri = $api_endpoint . '/soap';
        $wsdl = str_replace('/soap', '/apnscp.wsdl', $uri);
        $ip = $ctor[1] ?? ($_SERVER['REMOTE_ADDR'] ?? null);
        $ip = $ip ?? '127.0.0.1';
        $headers = ['Abort-On: error'];
        if ($ip && $ip !== '127.0.0.1') {
            $headers[] = 'X-Forwarded-For: ' . $ip;
        }
        $connopts = [
            'connection_timeout' => 30, 'location' => $uri, 'uri' => 'urn:apnscp.api.soap', 'trace' => true,
            'stream_context' => stream_context_create(['http' => ['header' => implode("\r\n", $headers) . "\r\n"]]),
        ];
        $connopts['location'] = $uri . '?authkey=' . $api_key;
        $instance = new static($wsdl, $connopts);
        if (isset($ctor[0])) {
            $instance->setId($ctor[0]);
        }
        return $instance;
    }

    public function setId(string $name)
    {
        $this->id = $name;
        return $this;
    }

    public function __call($function_name, $arguments)
    {
        static $ctr = 0;
        if ($this->id) {
            $this->__setCookie('esprit_id', $this->id);
        }
        $ret = parent::__call($function_name, $arguments);
        if ($ret !== null || $ctr >= 5) {
            $ctr = 0;
            return $ret;
        }
        usleep(50000);
        $ctr++;
        self::$retries++;
        return $this->__call($function_name, $arguments);
    }
}

function whmcs_endpoint(array $s) { return $s['endpoint']; }

function whmcs(string $action, array $s, array $p)
{
    $client = WhmcsConnector::create_client($s['key'], whmcs_endpoint($s));
    $domain = strtolower($p['domain'] ?? '');
    switch ($action) {
        case 'create':  // apnscp_CreateAccount + Helper::generateOptions: 11 options, every value a string
            $opts = [
                'auth.tpasswd' => $p['password'], 'siteinfo.enabled' => '1', 'siteinfo.domain' => $p['domain'],
                'siteinfo.admin_user' => $p['username'], 'siteinfo.email' => $p['email'],
                'siteinfo.plan' => $p['plan'], 'billing.invoice' => 'WHMCS-' . $p['serviceid'],
                'mysql.dbaseadmin' => $p['username'], 'mysql.dbaseprefix' => $p['username'] . '_',
                'pgsql.dbaseadmin' => $p['username'], 'pgsql.dbaseprefix' => $p['username'] . '_',
            ];
            $client->admin_add_site($domain, $p['username'], $opts);
            return 'success';
        case 'changepassword':
            $client->auth_change_password($p['password'], $p['username'], $domain);
            return 'success';
        case 'suspend':
            $client->admin_deactivate_site($domain, ['reason' => $p['suspendreason']]);
            return 'success';
        case 'unsuspend':
            $client->admin_activate_site($domain);
            return 'success';
        case 'changepackage':
            $client->admin_edit_site($domain, ['siteinfo.plan' => $p['plan']], ['reset' => true]);
            return 'success';
        case 'sso':
            $session_id = $client->admin_hijack($domain, $p['username'], 'UI');
            $app = $p['app'] ?? 'dashboard';
            $extra = [];
            if ($app === 'subdomains') {
                $extra['mode'] = 'add';
            }
            $extra['esprit_id'] = $session_id;
            return ['success' => true, 'redirectTo' => whmcs_endpoint($s) . "/apps/{$app}?" . http_build_query($extra)];
        case 'plans':
            $return = [];
            foreach ($client->admin_list_plans() as $plan) {
                $return[$plan] = 'server - ' . $plan;
            }
            return $return;
        case 'usage':  // apnscp_UsageUpdate of 1.0.13: the administrator's key only
            $siteInfoArr = $client->admin_collect(['siteinfo.domain']);
            $storageArr = $client->admin_get_usage('storage');
            $bandwidthArr = $client->admin_get_usage('bandwidth');
            $rows = [];
            foreach ($siteInfoArr as $site => $values) {
                $rows[$values['domain']] = [
                    'SiteID' => $site,
                    'diskusage' => $storageArr[$site]['qused'] / 1024, 'disklimit' => $storageArr[$site]['qhard'] / 1024,
                    'bwusage' => ($bandwidthArr[$site]['sum'] / 1024) / 1024,
                    'bwlimit' => ($bandwidthArr[$site]['threshold'] / 1024) / 1024,
                ];
            }
            return $rows;
        case 'usage_hijacked':  // 1.0.8: its own PHP session id as esprit_id, then one hijacked client per site
            $adminClient = WhmcsConnector::create_client($s['key'], whmcs_endpoint($s), $p['whmcs_session_id']);
            $rows = [];
            foreach ($adminClient->admin_get_domains() as $d) {
                $session_id = $adminClient->admin_hijack($d);
                $userClient = WhmcsConnector::create_client($s['key'], whmcs_endpoint($s), $session_id);
                $bw = $userClient->site_get_bandwidth_usage();
                $quota = $userClient->site_get_account_quota();
                $rows[$d] = ['diskusage' => $quota['qused'] / 1024, 'disklimit' => $quota['qhard'] / 1024,
                             'bwusage' => ($bw['used'] / 1024) / 1024, 'bwlimit' => ($bw['total'] / 1024) / 1024,
                             'whoami' => $userClient->common_whoami()];
            }
            return ['rows' => $rows, 'retries' => WhmcsConnector::$retries];
        case 'checkip':  // the ClientAreaPageProductDetails hook (apnscp_checkIP), as the visitor's request
            $_SERVER['REMOTE_ADDR'] = $p['ip'];
            $client = WhmcsConnector::create_client($s['key'], whmcs_endpoint($s));
            if ($client->rampart_is_banned($p['ip'])) {
                $jails = $client->rampart_banned_services($p['ip']);
                $client->rampart_unban($p['ip']);
                $rampartCheck = $client->admin_collect(['rampart.enabled'], null, [$domain]);
                $rampart_enabled = ($rampartCheck[$domain]['rampart']['enabled'] ?? null) === 1;
                return ['jails' => $jails, 'rampart_enabled' => $rampart_enabled, 'collected' => $rampartCheck];
            }
            return false;
        case 'terminate':
            try {
                $client->admin_delete_site($domain, ['force' => true]);
                return 'success';
            } catch (Exception $e) {
                if (empty($e->getMessage()) || $e->getMessage() === 'Error Fetching http headers') {
                    return 'success';
                }
                return $e->getMessage();
            }
        case 'cron':  // DailyCronJob: deferred cancellations 30 days after their suspension (no dry-run)
            $opts['since'] = '30 days ago';
            $opts['match'] = 'Deferred Account Cancellation';
            return $client->admin_delete_site(null, $opts);
    }
    throw new Exception("unknown WHMCS action $action");
}

// --- ClientExec --------------------------------------------------------------------------------

class ClientExecApi extends SoapClient
{
    public static function create_client($server, $port, $apiKey)
    {
        $server .= ':' . $port;
        $uri = 'https://' . $server . '/soap';
        $wsdl = str_replace('/soap', '/' . '/apnscp.wsdl', $uri);  // WSDL_PATH = '/apnscp.wsdl': a double slash
        $connopts = [
            'connection_timeout' => 30, 'location' => $uri, 'uri' => 'urn:apnscp.api.soap', 'trace' => true,
            'stream_context' => stream_context_create(['http' => ['header' => "Abort-On: error\r\n"]]),
        ];
        $connopts['location'] = $uri . '?authkey=' . $apiKey;
        return new static($wsdl, $connopts);
    }
}

function clientexec(string $action, array $s, array $p)
{
    $client = ClientExecApi::create_client($s['host'], $s['port'], $s['key']);
    $domain = $p['domain'] ?? '';
    switch ($action) {
        case 'wsdl_url':
            return str_replace('/soap', '/' . '/apnscp.wsdl', 'https://' . $s['host'] . ':' . $s['port'] . '/soap');
        case 'create':
            $options = [
                'siteinfo.enabled' => 1, 'siteinfo.domain' => strtolower($domain),
                'siteinfo.admin_user' => strtolower($p['username']), 'siteinfo.email' => $p['email'],
                'siteinfo.plan' => $p['plan'], 'auth.tpasswd' => $p['password'],
            ];
            $client->admin_add_site($domain, $p['username'], $options);
            return true;
        case 'update_password':
            $client->auth_change_password($p['password'], $p['username'], strtolower($domain));
            return true;
        case 'update_package':
            $client->admin_edit_site(strtolower($domain), ['siteinfo.plan' => $p['plan']], ['reset' => 'true']);
            return true;
        case 'suspend':
            $client->admin_deactivate_site(strtolower($domain));
            return true;
        case 'unsuspend':
            $client->admin_activate_site(strtolower($domain));
            return true;
        case 'delete':
            $client->admin_delete_site(strtolower($domain));
            return true;
        case 'actions':  // getAvailableActions
            $actions = [];
            try {
                $response = $client->admin_collect(['siteinfo'], null, [strtolower($domain)]);
                if (count($response) == 0) {
                    return ['Create'];
                }
                $actions[] = (($response[strtolower($domain)]['active'] ?? null) == 1) ? 'Suspend' : 'UnSuspend';
                $actions[] = 'Delete';
                return ['actions' => $actions, 'response' => $response];
            } catch (Exception $e) {
                return ['Create'];
            }
        case 'test':
            $client->common_whoami();
            return true;
        case 'direct_link':
            $sessionId = $client->admin_hijack($domain, $p['username'], 'UI');
            $query = http_build_query(['esprit_id' => $sessionId]);
            return "https://{$s['host']}:{$s['port']}/apps/dashboard?{$query}";
    }
    throw new Exception("unknown ClientExec action $action");
}

// --- Blesta ------------------------------------------------------------------------------------

function blesta_request(array $s, $function, array $params = [], $session_id = null)
{
    $soap_location = ($s['use_ssl'] ? 'https' : 'http') . '://' . $s['host'] . ':' . $s['port'];
    ini_set('default_socket_timeout', 5000);
    $headers = ['Abort-On: error', 'X-Forwarded-For: ' . $s['requestor_ip']];
    $client = new SoapClient($soap_location . '/apnscp.wsdl', [
        'location' => $soap_location . '/soap?authkey=' . $s['key'], 'uri' => 'urn:net.apnscp.soap', 'trace' => true,
        'stream_context' => stream_context_create([
            'ssl' => ['verify_peer' => false, 'verify_peer_name' => false],
            'http' => ['header' => implode("\r\n", $headers) . "\r\n"],
        ]),
    ]);
    if (!is_null($session_id)) {
        $client->__setCookie('esprit_id', $session_id);
    }
    try {
        return call_user_func_array([$client, $function], $params);
    } catch (SoapFault $e) {
        return (object) ['error' => $e->getMessage()];
    }
}

function blesta_parse($response)  // Apnscp::parseResponse: falsy is an internal error
{
    if (!$response) {
        return ['error' => 'internal error'];
    }
    if (isset($response->error)) {
        return ['error' => $response->error];
    }
    return ['ok' => $response];
}

function blesta(string $action, array $s, array $p)
{
    switch ($action) {
        case 'create':
            $options = [
                'siteinfo.enabled' => true, 'siteinfo.domain' => $p['domain'], 'siteinfo.admin_user' => $p['username'],
                'siteinfo.email' => $p['email'], 'siteinfo.plan' => $p['plan'], 'auth.tpasswd' => $p['password'],
            ];
            $made = blesta_parse(blesta_request($s, 'admin_add_site', [$options['siteinfo.domain'],
                                                                      $options['siteinfo.admin_user'], $options]));
            return ['add' => $made, 'accounts' => count(blesta_request($s, 'admin_get_domains'))];
        case 'username_free':  // generateUsername's probe: a fault means nobody has it
            return is_object(blesta_request($s, 'admin_hijack', [$p['username']]));
        case 'stats':  // getAccount: a hijacked session, then a new client per call with the session's cookie
            $session_id = blesta_request($s, 'admin_hijack', [$p['domain']]);
            if (is_object($session_id)) {
                return ['error' => $session_id->error];
            }
            $disk = blesta_request($s, 'site_get_account_quota', [], $session_id);
            $bandwidth = blesta_request($s, 'site_get_bandwidth_usage', [], $session_id);
            return ['disk' => ['used' => $disk['qused'] / 1024, 'total' => $disk['qsoft'] / 1024],
                    'bandwidth' => ['used' => $bandwidth['used'] / 1024 / 1024,
                                    'total' => $bandwidth['total'] / 1024 / 1024],
                    'whoami' => blesta_request($s, 'common_whoami', [], $session_id)];
        case 'suspend':
            return blesta_parse(blesta_request($s, 'admin_deactivate_site', [$p['domain']]));
        case 'unsuspend':
            return blesta_parse(blesta_request($s, 'admin_activate_site', [$p['domain']]));
        case 'cancel':
            $deleted = blesta_parse(blesta_request($s, 'admin_delete_site', [$p['domain'], ['force' => true]]));
            return ['delete' => $deleted, 'accounts' => count(blesta_request($s, 'admin_get_domains'))];
        case 'password':
            return blesta_parse(blesta_request($s, 'auth_change_password',
                                               [$p['password'], $p['username'], $p['domain']]));
        case 'plan':  // updateAccountPlan: the flags nested inside the options under key 0
            return blesta_parse(blesta_request($s, 'admin_edit_site',
                                               [$p['domain'], ['siteinfo.plan' => $p['plan'], ['reset' => true]]]));
        case 'packages':
            $request = blesta_request($s, 'admin_list_plans');
            return is_array($request) ? array_combine($request, $request) : [];
        case 'validate':  // validateConnection
            return is_array(blesta_request($s, 'admin_get_domains'));
        case 'sso':
            $session_id = blesta_request($s, 'admin_hijack', [$p['domain'], $p['username'], 'UI']);
            if (is_object($session_id)) {
                return ['error' => $session_id->error];
            }
            return ($s['use_ssl'] ? 'https' : 'http') . '://' . $s['host'] . ':' . $s['port']
                . '/apps/dashboard?esprit_id=' . $session_id;
    }
    throw new Exception("unknown Blesta action $action");
}

// --- main --------------------------------------------------------------------------------------

$job = json_decode(stream_get_contents(STDIN), true);
try {
    $result = $job['module']($job['action'], $job['server'], $job['params'] ?? []);
    echo json_encode(['result' => $result]), "\n";
} catch (SoapFault $fault) {
    echo json_encode(['exception' => $fault->getMessage(), 'faultcode' => $fault->faultcode]), "\n";
} catch (Throwable $e) {
    echo json_encode(['exception' => get_class($e) . ': ' . $e->getMessage()]), "\n";
}
