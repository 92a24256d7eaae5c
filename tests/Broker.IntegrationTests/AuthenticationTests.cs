using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Broker.Protocol.V1;
using Broker.Server.Hosting;
using Broker.Server.Security;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Reflection.V1Alpha;

namespace Broker.IntegrationTests;

/// <summary>
/// API keys and grants (docs/security.md) on the real broker: no key, a wrong key, a revoked key, a key without the
/// permission and one with it, for publish, consume, admin and key management, over gRPC and the HTTP listener.
/// </summary>
public sealed class AuthenticationTests
{
    private static Task<TestBroker> StartWithKeysAsync(Action<BrokerOptions>? configure = null) =>
        TestBroker.StartAsync(options =>
        {
            options.RequireApiKeys = true;
            configure?.Invoke(options);
        });

    private static string BootstrapToken(TestBroker broker) => File.ReadAllText(Path.Combine(broker.DataDirectory, "bootstrap.token")).Trim();

    private static BrokerClient ClientWith(TestBroker broker, string? token) => new(broker.Host.Address, token);

    private static async Task<BrokerClientException> RefusedAsync(Func<Task> call, StatusCode status, int errorCode)
    {
        var refused = await Assert.ThrowsAsync<BrokerClientException>(call);
        Assert.Equal((status, errorCode), (refused.Status, refused.ErrorCode));
        return refused;
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task A_first_start_with_keys_required_makes_one_bootstrap_key_whose_token_is_in_an_owner_only_file_and_never_in_the_log()
    {
        await using var broker = await StartWithKeysAsync();
        string path = Path.Combine(broker.DataDirectory, "bootstrap.token");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(broker.DataDirectory, "keys.json")));
        string token = BootstrapToken(broker);

        using var admin = ClientWith(broker, token);
        var created = await admin.CreateApiKeyAsync("svc", ["publish:orders"]);
        var keys = await admin.ListApiKeysAsync();
        Assert.Equal([KeyRing.BootstrapKeyName, "svc"], keys.Select(key => key.Name));
        Assert.Equal(["*"], keys[0].Grants);

        // The keys file holds hashes only (no key here was made for SQS), and no secret reaches the log.
        string secret = token[(token.IndexOf('.') + 1)..];
        string createdSecret = created.Token[(created.Token.IndexOf('.') + 1)..];
        string file = File.ReadAllText(Path.Combine(broker.DataDirectory, "keys.json"));
        Assert.DoesNotContain(secret, file);
        Assert.DoesNotContain(createdSecret, file);
        Assert.Contains(broker.Logs.All, line => line.Contains(keys[0].Id) && line.Contains("bootstrap.token"));
        Assert.DoesNotContain(broker.Logs.All, line => line.Contains(secret) || line.Contains(createdSecret));

        // A restart keeps the keys and makes no second bootstrap key.
        await broker.RestartAsync();
        using var again = ClientWith(broker, token);
        Assert.Equal(2, (await again.ListApiKeysAsync()).Count);
        Assert.Equal(token, BootstrapToken(broker));
    }

    [Fact]
    public async Task Without_a_valid_key_every_call_is_unauthenticated_and_nothing_happens()
    {
        await using var broker = await StartWithKeysAsync();
        using var admin = ClientWith(broker, BootstrapToken(broker));
        await admin.CreateTopicAsync("jobs");
        var revoked = await admin.CreateApiKeyAsync("gone", ["*"]);
        await admin.RevokeApiKeyAsync(revoked.Key.Id);
        string wrongSecret = revoked.Token[..(revoked.Token.IndexOf('.') + 1)] + "not-the-secret";

        foreach (string? token in new[] { null, "garbage", "bk0000000000000000.secret", wrongSecret, revoked.Token })
        {
            using var client = ClientWith(broker, token);
            await RefusedAsync(() => client.PublishAsync("jobs", [OutgoingMessage.FromText("x")]), StatusCode.Unauthenticated, 1300);
            await RefusedAsync(() => client.SubscribeAsync("jobs", "g"), StatusCode.Unauthenticated, 1300);
            await RefusedAsync(() => client.ListTopicsAsync(), StatusCode.Unauthenticated, 1300);
            await RefusedAsync(() => client.DeleteTopicAsync("jobs"), StatusCode.Unauthenticated, 1300);
            await RefusedAsync(() => client.CreateApiKeyAsync("x", ["*"]), StatusCode.Unauthenticated, 1300);
        }
        var jobs = await admin.DescribeTopicAsync("jobs");
        Assert.Equal(0UL, jobs.NextOffset);
        Assert.Empty(jobs.Groups);
    }

    [Fact]
    public async Task Grants_decide_publish_consume_and_admin_per_topic_and_group_and_a_refusal_is_logged_without_the_secret()
    {
        await using var broker = await StartWithKeysAsync();
        using var admin = ClientWith(broker, BootstrapToken(broker));
        await admin.CreateTopicAsync("orders.eu");
        await admin.CreateTopicAsync("payments");
        var key = await admin.CreateApiKeyAsync("orders-service", ["publish:orders.*", "consume:orders.*:workers-*"]);
        using var client = ClientWith(broker, key.Token);

        // Allowed: publish and consume within the patterns.
        await client.PublishAsync("orders.eu", [OutgoingMessage.FromText("o1")]);
        await using (var subscription = await client.SubscribeAsync("orders.eu", "workers-1"))
        {
            var received = await Receive.ExactlyAsync(subscription, 1);
            Assert.Equal(1, (await subscription.AckAsync(received[0])).Accepted);
        }

        // Refused: another topic, another group, admin, key management.
        var typed = await RefusedAsync(() => client.PublishAsync("payments", [OutgoingMessage.FromText("p")]), StatusCode.PermissionDenied, 1301);
        Assert.Equal(BrokerError.PermissionDenied, typed.Error);
        await RefusedAsync(() => client.SubscribeAsync("payments", "workers-1"), StatusCode.PermissionDenied, 1301);
        await RefusedAsync(() => client.SubscribeAsync("orders.eu", "auditors"), StatusCode.PermissionDenied, 1301);
        await RefusedAsync(() => client.PurgeTopicAsync("orders.eu"), StatusCode.PermissionDenied, 1301);
        await RefusedAsync(() => client.DeleteTopicAsync("payments"), StatusCode.PermissionDenied, 1301);
        await RefusedAsync(() => client.CreateApiKeyAsync("escalate", ["*"]), StatusCode.PermissionDenied, 1301);
        // A group whose dead letters would go to a topic the key may not publish to.
        await RefusedAsync(() => client.SubscribeAsync("orders.eu", "workers-2",
            new SubscribeOptions { Group = new GroupOptions { MaxDeliveries = 3, DeadLetterTopic = "payments" } }), StatusCode.PermissionDenied, 1301);

        Assert.Equal(0UL, (await admin.DescribeTopicAsync("payments")).NextOffset);
        var groups = (await admin.DescribeTopicAsync("orders.eu")).Groups.Select(group => group.Name).ToList();
        Assert.Equal(["workers-1"], groups);
        // Lists show only the topics the key has a grant on (the group's dead-letter topic matches orders.* too).
        Assert.Equal(["orders.eu", "orders.eu.dlq"], (await client.ListTopicsAsync()).Order());

        string secret = key.Token[(key.Token.IndexOf('.') + 1)..];
        Assert.Contains(broker.Logs.All, line => line.Contains("Denied") && line.Contains(key.Key.Id) && line.Contains("'payments'"));
        Assert.DoesNotContain(broker.Logs.All, line => line.Contains(secret));
    }

    [Fact]
    public async Task ListGroups_shows_a_key_only_the_topics_it_administers_and_a_named_topic_needs_admin_on_it()
    {
        await using var broker = await StartWithKeysAsync();
        using var admin = ClientWith(broker, BootstrapToken(broker));
        await admin.CreateTopicAsync("orders.eu");
        await admin.CreateTopicAsync("payments");
        await admin.CreateGroupAsync("orders.eu", "workers");
        await admin.CreateGroupAsync("payments", "ledger");
        var worker = await admin.CreateApiKeyAsync("orders-worker", ["publish:orders.*", "consume:orders.*"]);
        var operatorKey = await admin.CreateApiKeyAsync("orders-operator", ["admin:orders.*"]);
        using var workerClient = ClientWith(broker, worker.Token);
        using var operatorClient = ClientWith(broker, operatorKey.Token);

        // Publishing and consuming orders.* administers nothing: no groups, no topic names, and no topic may be named.
        var none = await workerClient.ListGroupsAsync();
        Assert.Equal((0, 0), (none.Groups.Count, none.UnopenedTopics.Count));
        await RefusedAsync(() => workerClient.ListGroupsAsync("orders.eu"), StatusCode.PermissionDenied, 1301);

        var own = await operatorClient.ListGroupsAsync();
        Assert.Equal([("orders.eu", "workers")], own.Groups.Select(g => (g.Topic, g.Group.Name)));
        Assert.DoesNotContain("payments", own.UnopenedTopics);
        Assert.Equal(["workers"], (await operatorClient.ListGroupsAsync("orders.eu")).Groups.Select(g => g.Group.Name));
        await RefusedAsync(() => operatorClient.ListGroupsAsync("payments"), StatusCode.PermissionDenied, 1301);

        // The bootstrap key ("*") sees both.
        Assert.Equal([("orders.eu", "workers"), ("payments", "ledger")], (await admin.ListGroupsAsync()).Groups.Select(g => (g.Topic, g.Group.Name)));
    }

    [Fact]
    public async Task On_a_publish_stream_a_batch_to_a_forbidden_topic_fails_alone_and_the_stream_goes_on()
    {
        await using var broker = await StartWithKeysAsync();
        using var admin = ClientWith(broker, BootstrapToken(broker));
        var key = await admin.CreateApiKeyAsync("producer", ["publish:items"]);
        await admin.CreateTopicAsync("items");
        await admin.CreateTopicAsync("secrets");

        await using var producer = new BrokerProducer(new BrokerClientOptions { Listeners = broker.Host.Address.ToString(), ApiKey = key.Token });
        var allowed = await producer.SendAsync("items", "a");
        var forbidden = await producer.SendAsync("secrets", "b");
        var after = await producer.SendAsync("items", "c");
        await allowed;
        var refused = await Assert.ThrowsAsync<BrokerClientException>(() => forbidden);
        Assert.Equal((StatusCode.PermissionDenied, 1301), (refused.Status, refused.ErrorCode));
        await after;
        Assert.Equal(2UL, (await admin.DescribeTopicAsync("items")).NextOffset);
        Assert.Equal(0UL, (await admin.DescribeTopicAsync("secrets")).NextOffset);
    }

    [Fact]
    public async Task A_dead_letter_forged_in_the_old_header_format_is_moved_only_to_a_topic_the_redriving_key_may_publish_to()
    {
        await using var broker = await StartWithKeysAsync();
        using var admin = ClientWith(broker, BootstrapToken(broker));
        foreach (string topic in new[] { "orders", "orders.dlq", "payments" })
            await admin.CreateTopicAsync(topic);
        // Publish and admin on the dead-letter topic, publish on orders only.
        var key = await admin.CreateApiKeyAsync("orders-ops", ["publish:orders", "*:orders.dlq"]);
        using var client = ClientWith(broker, key.Token);

        // "dlq-original-topic" is how dead letters named their topic before the broker's headers were reserved: an
        // ordinary header, so this producer can write it and name a topic it may not publish to.
        await client.PublishAsync("orders.dlq", [
            OutgoingMessage.FromText("forged", new Dictionary<string, string> { ["dlq-original-topic"] = "payments" }),
            OutgoingMessage.FromText("own", new Dictionary<string, string> { ["dlq-original-topic"] = "orders" }),
        ]);
        var result = await client.RedriveAsync("orders.dlq");

        Assert.Equal((1u, 1u), (result.Moved, result.Skipped));
        Assert.Equal(0UL, (await admin.DescribeTopicAsync("payments")).NextOffset);
        Assert.Equal(1UL, (await admin.DescribeTopicAsync("orders")).NextOffset);
        // The bootstrap key may publish to payments: the skipped letter moves when it redrives.
        Assert.Equal((1u, 0u), ((await admin.RedriveAsync("orders.dlq")).Moved, 0u));
        Assert.Equal(1UL, (await admin.DescribeTopicAsync("payments")).NextOffset);
    }

    [Fact]
    public async Task Only_the_bare_star_grant_manages_keys_not_every_action_on_every_topic()
    {
        await using var broker = await StartWithKeysAsync();
        using var admin = ClientWith(broker, BootstrapToken(broker));
        await admin.CreateTopicAsync("jobs");
        var everyTopic = await admin.CreateApiKeyAsync("every-topic", ["*:*"]);
        using var client = ClientWith(broker, everyTopic.Token);

        await client.PublishAsync("jobs", [OutgoingMessage.FromText("allowed")]);
        await client.PurgeTopicAsync("jobs");
        await RefusedAsync(() => client.CreateApiKeyAsync("escalate", ["*"]), StatusCode.PermissionDenied, 1301);
        await RefusedAsync(() => client.ListApiKeysAsync(), StatusCode.PermissionDenied, 1301);
        await RefusedAsync(() => client.RevokeApiKeyAsync(everyTopic.Key.Id), StatusCode.PermissionDenied, 1301);
        Assert.Equal(2, (await admin.ListApiKeysAsync()).Count);
    }

    [Fact]
    public async Task A_revoked_key_stops_at_once_its_open_stream_ends_and_the_revocation_survives_a_restart()
    {
        await using var broker = await StartWithKeysAsync();
        string bootstrap = BootstrapToken(broker);
        using var admin = ClientWith(broker, bootstrap);
        await admin.CreateTopicAsync("jobs");
        var key = await admin.CreateApiKeyAsync("worker", ["consume:jobs", "publish:jobs"]);
        using var client = ClientWith(broker, key.Token);
        await using var subscription = await client.SubscribeAsync("jobs", "g");
        await client.PublishAsync("jobs", [OutgoingMessage.FromText("before")]);
        Assert.Single(await Receive.ExactlyAsync(subscription, 1));

        await admin.RevokeApiKeyAsync(key.Key.Id);
        await RefusedAsync(() => client.PublishAsync("jobs", [OutgoingMessage.FromText("after")]), StatusCode.Unauthenticated, 1300);
        // The open stream ends (its message goes back to the group, unacknowledged).
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        await Assert.ThrowsAnyAsync<Exception>(async () => await subscription.ReceiveAsync(deadline.Token));
        Assert.False(deadline.IsCancellationRequested, "the revoked key's stream did not end");
        await RefusedAsync(() => admin.RevokeApiKeyAsync(key.Key.Id), StatusCode.NotFound, 1302);

        await broker.RestartAsync();
        using var later = ClientWith(broker, key.Token);
        await RefusedAsync(() => later.ListTopicsAsync(), StatusCode.Unauthenticated, 1300);
        using var adminAgain = ClientWith(broker, bootstrap);
        Assert.DoesNotContain(await adminAgain.ListApiKeysAsync(), listed => listed.Id == key.Key.Id);
    }

    [Fact]
    public async Task Every_admin_rpc_is_refused_to_a_key_without_admin_grants_except_the_lists_and_stats()
    {
        // Walks the service's descriptor, so an RPC added later without a permission rule fails here (and the broker
        // refuses it: AuthInterceptor fails closed for requests it has no rule for).
        await using var broker = await StartWithKeysAsync();
        using var admin = ClientWith(broker, BootstrapToken(broker));
        var key = await admin.CreateApiKeyAsync("publisher", ["publish:*"]);
        using var client = ClientWith(broker, key.Token);
        var invoker = client.Channel.CreateCallInvoker();
        string[] openToEveryKey = ["ListTopics", "ListGroups", "GetServerStats"];  // ListGroups without a topic: filtered
        foreach (var method in Admin.Descriptor.Methods)
        {
            var call = new Method<Google.Protobuf.IMessage, Google.Protobuf.IMessage>(MethodType.Unary, Admin.Descriptor.FullName, method.Name,
                Marshallers.Create(message => Google.Protobuf.MessageExtensions.ToByteArray(message), bytes => method.OutputType.Parser.ParseFrom(bytes)),
                Marshallers.Create(message => Google.Protobuf.MessageExtensions.ToByteArray(message), bytes => method.OutputType.Parser.ParseFrom(bytes)));
            var request = method.InputType.Parser.ParseFrom([]);
            if (openToEveryKey.Contains(method.Name))
            {
                await invoker.AsyncUnaryCall(call, null, new CallOptions(), request);
                continue;
            }
            var refused = await Assert.ThrowsAsync<RpcException>(async () => await invoker.AsyncUnaryCall(call, null, new CallOptions(), request));
            Assert.True(refused.StatusCode == StatusCode.PermissionDenied, $"{method.Name}: {refused.Status}");
        }
    }

    [Fact]
    public async Task Bad_key_requests_are_invalid_and_store_nothing()
    {
        await using var broker = await StartWithKeysAsync();
        using var admin = ClientWith(broker, BootstrapToken(broker));
        await RefusedAsync(() => admin.CreateApiKeyAsync("x", []), StatusCode.InvalidArgument, 1000);
        await RefusedAsync(() => admin.CreateApiKeyAsync("x", ["delete:*"]), StatusCode.InvalidArgument, 1000);
        await RefusedAsync(() => admin.CreateApiKeyAsync("x", ["publish:a/b"]), StatusCode.InvalidArgument, 1000);
        await RefusedAsync(() => admin.CreateApiKeyAsync("", ["*"]), StatusCode.InvalidArgument, 1000);
        Assert.Single(await admin.ListApiKeysAsync());
    }

    [Fact]
    public async Task Health_stays_open_reflection_and_metrics_need_a_key_and_the_web_api_shows_only_granted_topics()
    {
        await using var broker = await StartWithKeysAsync();
        using var admin = ClientWith(broker, BootstrapToken(broker));
        await admin.CreateTopicAsync("mine");
        await admin.CreateTopicAsync("theirs");
        var key = await admin.CreateApiKeyAsync("viewer", ["admin:mine"]);

        using var anonymous = ClientWith(broker, null);
        var health = await new Health.HealthClient(anonymous.Channel).CheckAsync(new HealthCheckRequest());
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
        using (var call = new ServerReflection.ServerReflectionClient(anonymous.Channel).ServerReflectionInfo())
        {
            // The refusal may end the call before the request is even written.
            var refused = await Assert.ThrowsAsync<RpcException>(async () =>
            {
                await call.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = "" });
                await call.ResponseStream.MoveNext(CancellationToken.None);
            });
            Assert.Equal(StatusCode.Unauthenticated, refused.StatusCode);
        }

        using var http = new HttpClient { BaseAddress = broker.Host.HttpAddress };
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/healthz")).StatusCode);
        var metrics = await http.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.Unauthorized, metrics.StatusCode);
        Assert.StartsWith("Basic", metrics.Headers.WwwAuthenticate.ToString());
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("/api/topics")).StatusCode);

        using var withBearer = new HttpRequestMessage(HttpMethod.Get, "/metrics");
        withBearer.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key.Token);
        Assert.Equal(HttpStatusCode.OK, (await http.SendAsync(withBearer)).StatusCode);

        // A browser sends the key as the Basic password.
        using var topics = new HttpRequestMessage(HttpMethod.Get, "/api/topics");
        topics.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("me:" + key.Token)));
        string json = await (await http.SendAsync(topics)).Content.ReadAsStringAsync();
        Assert.Contains("\"mine\"", json);
        Assert.DoesNotContain("\"theirs\"", json);

        using var peekTheirs = new HttpRequestMessage(HttpMethod.Get, "/api/topics/theirs/messages");
        peekTheirs.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key.Token);
        Assert.Equal(HttpStatusCode.Forbidden, (await http.SendAsync(peekTheirs)).StatusCode);
    }

    [Fact]
    public async Task Open_endpoints_are_configurable_health_can_be_closed_and_metrics_opened()
    {
        await using var broker = await StartWithKeysAsync(options => options.OpenEndpoints = "metrics");
        using var http = new HttpClient { BaseAddress = broker.Host.HttpAddress };
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("/healthz")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/metrics")).StatusCode);
        using var anonymous = ClientWith(broker, null);
        var refused = await Assert.ThrowsAsync<RpcException>(async () => await new Health.HealthClient(anonymous.Channel).CheckAsync(new HealthCheckRequest()));
        Assert.Equal(StatusCode.Unauthenticated, refused.StatusCode);
    }

    [Fact]
    public async Task Without_keys_the_web_view_answers_only_to_localhost_ip_addresses_and_the_configured_host_names()
    {
        await using var broker = await TestBroker.StartAsync(options => options.WebHosts = "broker.internal");
        await broker.Client.CreateTopicAsync("jobs");
        using var http = new HttpClient { BaseAddress = broker.Host.HttpAddress };

        async Task<HttpStatusCode> GetAsync(string path, string host)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, path);
            request.Headers.Host = host;
            using var response = await http.SendAsync(request);
            return response.StatusCode;
        }

        // A page of evil.example whose name now resolves to 127.0.0.1 (DNS rebinding) is refused; the rest answer.
        Assert.Equal(HttpStatusCode.Forbidden, await GetAsync("/api/topics", "evil.example"));
        Assert.Equal(HttpStatusCode.Forbidden, await GetAsync("/ui/", $"evil.example:{broker.Host.HttpAddress!.Port}"));
        Assert.Equal(HttpStatusCode.OK, await GetAsync("/api/topics", $"localhost:{broker.Host.HttpAddress!.Port}"));
        Assert.Equal(HttpStatusCode.OK, await GetAsync("/api/topics", "127.0.0.1"));
        Assert.Equal(HttpStatusCode.OK, await GetAsync("/api/topics", "[::1]:7180"));
        Assert.Equal(HttpStatusCode.OK, await GetAsync("/api/topics", "broker.internal"));
        // Health and metrics tell no secrets and need no such check.
        Assert.Equal(HttpStatusCode.OK, await GetAsync("/healthz", "evil.example"));
    }

    [Fact]
    public async Task Without_keys_required_a_key_is_not_needed_and_keys_can_still_be_managed()
    {
        await using var broker = await TestBroker.StartAsync();
        await broker.Client.CreateTopicAsync("open");
        var created = await broker.Client.CreateApiKeyAsync("later", ["publish:open"]);
        Assert.StartsWith("bk", created.Token);
        Assert.False(File.Exists(Path.Combine(broker.DataDirectory, "bootstrap.token")));
        Assert.Single(await broker.Client.ListApiKeysAsync());
    }

    [Theory]
    [InlineData("0.0.0.0", false, false, false)]
    [InlineData("10.1.2.3", false, false, false)]
    [InlineData("0.0.0.0", true, false, true)]
    [InlineData("0.0.0.0", false, true, true)]
    [InlineData("127.0.0.1", false, false, true)]
    [InlineData("::1", false, false, true)]
    public void Listening_beyond_loopback_needs_keys_or_an_explicit_opt_in(string host, bool requireKeys, bool allowOpen, bool valid)
    {
        var options = new BrokerOptions { Host = host, RequireApiKeys = requireKeys, AllowUnauthenticatedRemote = allowOpen };
        if (valid)
            options.Validate();
        else
            Assert.Contains("RequireApiKeys", Assert.Throws<ArgumentException>(options.Validate).Message);
    }

    [Theory]
    [InlineData("publish:orders.*", "publish", "orders.eu.high", null, true)]
    [InlineData("publish:orders.*", "publish", "orders", null, false)]
    [InlineData("publish:orders.*", "consume", "orders.eu", "g", false)]
    [InlineData("consume:orders:workers-*", "consume", "orders", "workers-7", true)]
    [InlineData("consume:orders:workers-*", "consume", "orders", "auditors", false)]
    [InlineData("consume:*", "consume", "anything", "any", true)]
    [InlineData("admin:*-dev", "admin", "billing-dev", null, true)]
    [InlineData("admin:*-dev", "admin", "billing-prod", null, false)]
    [InlineData("*", "admin", "x", null, true)]
    [InlineData("*", "keys", "*", null, true)]
    [InlineData("keys", "keys", "*", null, true)]
    [InlineData("keys", "publish", "x", null, false)]
    [InlineData("admin:*", "keys", "*", null, false)]
    [InlineData("publish:a*b*c", "publish", "aXbYbc", null, true)]
    [InlineData("*:orders", "consume", "orders", "g", true)]
    [InlineData("*:orders", "keys", "*", null, false)]
    public void Grant_patterns_match_names_with_star_as_any_run_of_characters(string text, string action, string topic, string? group, bool allowed)
    {
        Assert.True(Grant.TryParse(text, out var grant, out _));
        Assert.Equal(allowed, grant.Allows(Enum.Parse<Permission>(action, ignoreCase: true), topic, group));
    }

    [Theory]
    [InlineData("read:x")]
    [InlineData("publish")]
    [InlineData("publish:")]
    [InlineData("publish:a:b")]
    [InlineData("keys:x")]
    [InlineData("consume:a:b:c")]
    [InlineData("admin:a b")]
    public void Malformed_grants_are_refused_with_a_reason(string text)
    {
        Assert.False(Grant.TryParse(text, out _, out string? problem));
        Assert.Contains(text, problem);
    }
}
