using System.Text;
using Amazon.Runtime;
using Amazon.SQS;
using Amazon.SQS.Model;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace Broker.IntegrationTests;

/// <summary>
/// SQS with API keys required (docs/security.md, "SQS signatures"), through the AWS SDK for .NET (JSON protocol): signatures are
/// verified against keys made for SQS, and each action needs its grant on the queue's topic. Every refusal is checked
/// to have changed nothing. (boto3, the query protocol and presigned URLs: clients/python/tests/test_sqs_auth.py.)
/// </summary>
public sealed class SqsAuthTests(SqsAuthTests.KeyedBroker keyed) : IClassFixture<SqsAuthTests.KeyedBroker>
{
    /// <summary>One broker requiring keys for the class, with an admin gRPC client holding the bootstrap key.</summary>
    public sealed class KeyedBroker : IAsyncLifetime
    {
        public TestBroker Broker { get; private set; } = null!;
        public BrokerClient Admin { get; private set; } = null!;

        public async Task InitializeAsync()
        {
            Broker = await TestBroker.StartAsync(options => options.RequireApiKeys = true);
            Admin = new BrokerClient(Broker.Host.Address, File.ReadAllText(Path.Combine(Broker.DataDirectory, "bootstrap.token")).Trim());
        }

        public async Task DisposeAsync()
        {
            Admin.Dispose();
            await Broker.DisposeAsync();
        }
    }

    private static string NewName(string prefix) => $"{prefix}-{Guid.NewGuid():N}";

    /// <summary>An SQS key's AWS credentials: the id, and the token after the dot.</summary>
    private async Task<(string AccessKeyId, string Secret)> SqsKeyAsync(string name, params string[] grants) =>
        Credentials(await keyed.Admin.CreateApiKeyAsync(name, grants, sqs: true));

    private static (string AccessKeyId, string Secret) Credentials(Broker.Protocol.V1.CreateApiKeyResponse created) =>
        (created.Key.Id, created.Token[(created.Token.IndexOf('.') + 1)..]);

    private static AmazonSQSClient Sqs(TestBroker broker, (string AccessKeyId, string Secret) key, HttpClientFactory? http = null) =>
        new(new BasicAWSCredentials(key.AccessKeyId, key.Secret), new AmazonSQSConfig
        {
            ServiceURL = broker.Host.HttpAddress!.ToString(),
            AuthenticationRegion = "eu-west-3",  // any region is accepted: the broker has none
            MaxErrorRetry = 0,
            HttpClientFactory = http,
        });

    private AmazonSQSClient Sqs((string AccessKeyId, string Secret) key, HttpClientFactory? http = null) => Sqs(keyed.Broker, key, http);

    private static async Task<string> RefusedAsync(Func<Task> call, string code, System.Net.HttpStatusCode status)
    {
        var refused = await Assert.ThrowsAnyAsync<AmazonSQSException>(call);
        Assert.Equal((code, status), (refused.ErrorCode, refused.StatusCode));
        return refused.Message;
    }

    private static async Task<(int Visible, int InFlight)> CountsAsync(AmazonSQSClient sqs, string url)
    {
        var attributes = await sqs.GetQueueAttributesAsync(url, ["All"]);
        return (attributes.ApproximateNumberOfMessages, attributes.ApproximateNumberOfMessagesNotVisible);
    }

    [Fact]
    public async Task A_key_made_for_sqs_with_the_grants_creates_sends_receives_and_deletes()
    {
        string name = NewName("signed");
        using var sqs = Sqs(await SqsKeyAsync("worker", $"*:{name}"));
        string url = (await sqs.CreateQueueAsync(name)).QueueUrl;
        await sqs.SendMessageAsync(url, "héllo, signed");
        await sqs.SendMessageBatchAsync(url, [new("a", "one"), new("b", "two")]);
        var received = new List<Message>();
        while (received.Count < 3)
            received.AddRange((await sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, MaxNumberOfMessages = 10, WaitTimeSeconds = 5 })).Messages ?? []);
        Assert.Equal(["héllo, signed", "one", "two"], received.Select(m => m.Body).Order(StringComparer.Ordinal));
        await sqs.DeleteMessageAsync(url, received[0].ReceiptHandle);
        await sqs.DeleteMessageBatchAsync(url, [.. received.Skip(1).Select((m, i) => new DeleteMessageBatchRequestEntry($"d{i}", m.ReceiptHandle))]);
        Assert.Equal((0, 0), await CountsAsync(sqs, url));
        await sqs.DeleteQueueAsync(url);
        Assert.DoesNotContain(name, await keyed.Admin.ListTopicsAsync());
    }

    [Fact]
    public async Task A_wrong_secret_an_unknown_access_key_and_a_key_not_made_for_sqs_are_refused_and_nothing_is_sent()
    {
        string name = NewName("refused");
        var key = await SqsKeyAsync("owner", $"*:{name}");
        using var owner = Sqs(key);
        string url = (await owner.CreateQueueAsync(name)).QueueUrl;
        var grpcOnly = Credentials(await keyed.Admin.CreateApiKeyAsync("grpc-only", [$"*:{name}"]));

        using (var wrongSecret = Sqs((key.AccessKeyId, key.Secret[..^2] + (key.Secret.EndsWith("AA") ? "BB" : "AA"))))
            await RefusedAsync(() => wrongSecret.SendMessageAsync(url, "x"), "SignatureDoesNotMatch", System.Net.HttpStatusCode.Forbidden);
        using (var unknown = Sqs(("bk0123456789abcdef", key.Secret)))
            await RefusedAsync(() => unknown.SendMessageAsync(url, "x"), "InvalidClientTokenId", System.Net.HttpStatusCode.Forbidden);
        // Right id and secret, but the keys file keeps no secret for a gRPC key: the broker cannot check its signature.
        using (var notForSqs = Sqs(grpcOnly))
            await RefusedAsync(() => notForSqs.SendMessageAsync(url, "x"), "InvalidClientTokenId", System.Net.HttpStatusCode.Forbidden);
        // A revoked key is unknown from then on.
        var revoked = await SqsKeyAsync("revoked", $"*:{name}");
        await keyed.Admin.RevokeApiKeyAsync(revoked.AccessKeyId);
        using (var gone = Sqs(revoked))
            await RefusedAsync(() => gone.SendMessageAsync(url, "x"), "InvalidClientTokenId", System.Net.HttpStatusCode.Forbidden);

        Assert.Equal(0UL, (await keyed.Admin.DescribeTopicAsync(name)).NextOffset);
        Assert.DoesNotContain(keyed.Broker.Logs.All, line => line.Contains(key.Secret) || line.Contains(grpcOnly.Secret));
        Assert.Contains(keyed.Broker.Logs.All, line => line.Contains("SignatureDoesNotMatch") && line.Contains(key.AccessKeyId));
    }

    [Fact]
    public async Task A_key_without_the_permission_is_denied_send_receive_purge_and_the_rest_and_nothing_changes()
    {
        string name = NewName("guarded");
        string deadLetters = NewName("guarded-dlq");
        using var owner = Sqs(await SqsKeyAsync("owner", $"*:{name}", $"*:{deadLetters}"));
        string url = (await owner.CreateQueueAsync(name)).QueueUrl;
        await owner.CreateQueueAsync(deadLetters);
        await owner.SendMessageAsync(url, "stays");

        using var reader = Sqs(await SqsKeyAsync("reader", $"consume:{name}:sqs"));
        using var writer = Sqs(await SqsKeyAsync("writer", $"publish:{name}"));
        using var otherGroup = Sqs(await SqsKeyAsync("other-group", $"consume:{name}:workers"));
        var forbidden = System.Net.HttpStatusCode.Forbidden;

        await RefusedAsync(() => reader.SendMessageAsync(url, "no"), "AccessDenied", forbidden);
        await RefusedAsync(() => reader.SendMessageBatchAsync(url, [new("a", "no")]), "AccessDenied", forbidden);
        await RefusedAsync(() => writer.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 0 }), "AccessDenied", forbidden);
        // A consume grant for another group is not the queue's (its group is "sqs").
        await RefusedAsync(() => otherGroup.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 0 }), "AccessDenied", forbidden);
        await RefusedAsync(() => writer.PurgeQueueAsync(url), "AccessDenied", forbidden);
        await RefusedAsync(() => reader.PurgeQueueAsync(url), "AccessDenied", forbidden);
        await RefusedAsync(() => writer.DeleteQueueAsync(url), "AccessDenied", forbidden);
        await RefusedAsync(() => writer.SetQueueAttributesAsync(url, new() { ["VisibilityTimeout"] = "5" }), "AccessDenied", forbidden);
        await RefusedAsync(() => writer.CreateQueueAsync(NewName("guarded-new")), "AccessDenied", forbidden);
        await RefusedAsync(() => writer.TagQueueAsync(new TagQueueRequest { QueueUrl = url, Tags = new() { ["k"] = "v" } }), "AccessDenied", forbidden);
        await RefusedAsync(() => writer.UntagQueueAsync(new UntagQueueRequest { QueueUrl = url, TagKeys = ["k"] }), "AccessDenied", forbidden);
        Assert.Empty((await writer.ListQueueTagsAsync(new ListQueueTagsRequest { QueueUrl = url })).Tags ?? []);

        Assert.Equal((1, 0), await CountsAsync(owner, url));
        Assert.Equal("30", (await owner.GetQueueAttributesAsync(url, ["VisibilityTimeout"])).Attributes["VisibilityTimeout"]);

        // The reader may receive and delete; the writer may send.
        var message = Assert.Single((await reader.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 5 })).Messages);
        Assert.Equal("stays", message.Body);
        await RefusedAsync(() => writer.DeleteMessageAsync(url, message.ReceiptHandle), "AccessDenied", forbidden);
        await RefusedAsync(() => writer.ChangeMessageVisibilityAsync(url, message.ReceiptHandle, 0), "AccessDenied", forbidden);
        Assert.Equal((0, 1), await CountsAsync(owner, url));
        await reader.DeleteMessageAsync(url, message.ReceiptHandle);
        await writer.SendMessageAsync(url, "allowed");
        Assert.Equal((1, 0), await CountsAsync(owner, url));

        // A redrive policy makes the broker publish dead letters to the named queue: admin alone is not enough.
        string redirected = NewName("guarded");
        using var adminOnly = Sqs(await SqsKeyAsync("admin-only", $"admin:{redirected}"));
        string policy = $"{{\"deadLetterTargetArn\":\"arn:aws:sqs:local:000000000000:{deadLetters}\",\"maxReceiveCount\":\"3\"}}";
        await RefusedAsync(() => adminOnly.CreateQueueAsync(new CreateQueueRequest { QueueName = redirected, Attributes = new() { ["RedrivePolicy"] = policy } }),
            "AccessDenied", forbidden);
        Assert.DoesNotContain(redirected, await keyed.Admin.ListTopicsAsync());
        // Nor on a queue it administers: the refusal leaves its attributes as they were.
        string adminOwned = (await adminOnly.CreateQueueAsync(redirected)).QueueUrl;
        await RefusedAsync(() => adminOnly.SetQueueAttributesAsync(adminOwned, new() { ["RedrivePolicy"] = policy, ["VisibilityTimeout"] = "7" }),
            "AccessDenied", forbidden);
        var kept = (await adminOnly.GetQueueAttributesAsync(adminOwned, ["All"])).Attributes;
        Assert.Equal(("30", false), (kept["VisibilityTimeout"], kept.ContainsKey("RedrivePolicy")));
        // A move task out of the dead-letter queue needs admin on it.
        await RefusedAsync(() => writer.StartMessageMoveTaskAsync(new StartMessageMoveTaskRequest { SourceArn = $"arn:aws:sqs:local:000000000000:{deadLetters}" }),
            "AccessDenied", forbidden);
    }

    [Fact]
    public async Task Lists_and_lookups_show_only_the_queues_a_key_has_a_grant_on()
    {
        string prefix = NewName("listed");
        using var root = Sqs(await SqsKeyAsync("root", "*"));
        string mine = (await root.CreateQueueAsync(prefix + "-mine")).QueueUrl;
        string theirs = (await root.CreateQueueAsync(prefix + "-theirs")).QueueUrl;
        string dlq = (await root.CreateQueueAsync(prefix + "-dlq")).QueueUrl;
        foreach (string source in new[] { mine, theirs })
        {
            await root.SetQueueAttributesAsync(source, new()
            {
                ["RedrivePolicy"] = $"{{\"deadLetterTargetArn\":\"arn:aws:sqs:local:000000000000:{prefix}-dlq\",\"maxReceiveCount\":\"3\"}}",
            });
        }
        using var limited = Sqs(await SqsKeyAsync("limited", $"publish:{prefix}-mine", $"consume:{prefix}-dlq"));

        // The consume grant on the dead-letter queue shows it too.
        Assert.Equal([dlq, mine], (await limited.ListQueuesAsync(prefix)).QueueUrls.Order(StringComparer.Ordinal));
        Assert.Equal([dlq, mine, theirs], (await root.ListQueuesAsync(prefix)).QueueUrls.Order(StringComparer.Ordinal));
        Assert.Equal([mine], (await limited.ListDeadLetterSourceQueuesAsync(new ListDeadLetterSourceQueuesRequest { QueueUrl = dlq })).QueueUrls);
        Assert.Equal(mine, (await limited.GetQueueUrlAsync(prefix + "-mine")).QueueUrl);
        await limited.GetQueueAttributesAsync(mine, ["All"]);
        // No grant: denied before the queue is looked up, so an existing queue and a missing one look the same.
        string existing = await RefusedAsync(() => limited.GetQueueUrlAsync(prefix + "-theirs"), "AccessDenied", System.Net.HttpStatusCode.Forbidden);
        string missing = await RefusedAsync(() => limited.GetQueueUrlAsync(prefix + "-nowhere"), "AccessDenied", System.Net.HttpStatusCode.Forbidden);
        Assert.Equal(existing.Replace("-theirs", ""), missing.Replace("-nowhere", ""));
        await RefusedAsync(() => limited.GetQueueAttributesAsync(theirs, ["All"]), "AccessDenied", System.Net.HttpStatusCode.Forbidden);
    }

    [Fact]
    public async Task A_body_changed_after_signing_is_refused_whether_or_not_it_states_its_hash_and_nothing_is_sent()
    {
        string name = NewName("tamper");
        var key = await SqsKeyAsync("owner", $"*:{name}");
        using var sqs = Sqs(key);
        string url = (await sqs.CreateQueueAsync(name)).QueueUrl;

        foreach (bool keepHashHeader in new[] { true, false })
        {
            var tamper = new TamperingHttp("signed body", "forged body", keepHashHeader);
            using var forged = Sqs(key, tamper);
            await RefusedAsync(() => forged.SendMessageAsync(url, "signed body"), "SignatureDoesNotMatch", System.Net.HttpStatusCode.Forbidden);
            Assert.Equal(1, tamper.Tampered);
        }
        // The same client without tampering gets through: the refusals were the changed bodies'.
        var honest = new TamperingHttp("never sent", "x", keepHashHeader: true);
        using (var untouched = Sqs(key, honest))
            await untouched.SendMessageAsync(url, "signed body");
        Assert.Equal(0, honest.Tampered);
        Assert.Equal(1UL, (await keyed.Admin.DescribeTopicAsync(name)).NextOffset);
    }

    [Fact]
    public async Task A_request_signed_more_than_15_minutes_from_the_brokers_clock_is_expired()
    {
        // The broker's clock 20 minutes behind the client's: every signature looks 20 minutes in the future.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow - TimeSpan.FromMinutes(20));
        await using var broker = await TestBroker.StartAsync(options => options.RequireApiKeys = true, clock);
        using var admin = new BrokerClient(broker.Host.Address, File.ReadAllText(Path.Combine(broker.DataDirectory, "bootstrap.token")).Trim());
        using var sqs = Sqs(broker, Credentials(await admin.CreateApiKeyAsync("late", ["*"], sqs: true)));

        await RefusedAsync(() => sqs.CreateQueueAsync("late"), "RequestExpired", System.Net.HttpStatusCode.BadRequest);
        Assert.DoesNotContain("late", await admin.ListTopicsAsync());
        clock.Advance(TimeSpan.FromMinutes(15));  // 5 minutes apart (and the seconds this test took): within the skew
        await sqs.CreateQueueAsync("late");
        Assert.Contains("late", await admin.ListTopicsAsync());
    }

    /// <summary>
    /// Replaces a request body after the SDK signed it, as someone on the path would (keeping the signed headers;
    /// optionally dropping x-amz-content-sha256 so only the signature's payload hash can catch it).
    /// </summary>
    private sealed class TamperingHttp(string from, string to, bool keepHashHeader) : HttpClientFactory
    {
        private readonly string _from = from;
        private readonly string _to = to;
        private readonly bool _keepHashHeader = keepHashHeader;
        private int _tampered;

        public int Tampered => _tampered;

        public override HttpClient CreateHttpClient(IClientConfig clientConfig) => new(new Handler(this));

        public override bool UseSDKHttpClientCaching(IClientConfig clientConfig) => false;

        public override bool DisposeHttpClientsAfterUse(IClientConfig clientConfig) => true;

        private sealed class Handler(TamperingHttp owner) : DelegatingHandler(new HttpClientHandler())
        {
            protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
            {
                if (request.Content is { } content && await content.ReadAsStringAsync(cancellationToken) is var body && body.Contains(owner._from))
                {
                    var forged = new ByteArrayContent(Encoding.UTF8.GetBytes(body.Replace(owner._from, owner._to)));
                    forged.Headers.ContentType = content.Headers.ContentType;
                    request.Content = forged;
                    if (!owner._keepHashHeader)
                        request.Headers.Remove("X-Amz-Content-SHA256");
                    Interlocked.Increment(ref owner._tampered);
                }
                return await base.SendAsync(request, cancellationToken);
            }
        }
    }

    [Fact]
    public async Task Revoking_a_key_ends_its_long_poll_at_once()
    {
        string name = NewName("revoked-poll");
        var created = await keyed.Admin.CreateApiKeyAsync("poller", [$"*:{name}"], sqs: true);
        using var sqs = Sqs(Credentials(created));
        string url = (await sqs.CreateQueueAsync(name)).QueueUrl;
        var polling = sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 20 });
        // The poll is under way once its receiver has joined the queue's group.
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        while ((await keyed.Admin.DescribeTopicAsync(name)).Groups.SingleOrDefault()?.Consumers is not > 0)
            await Task.Delay(5, deadline.Token);

        await keyed.Admin.RevokeApiKeyAsync(created.Key.Id);
        // Ended by the revocation, not answered (empty) when its 20 s were up.
        await Assert.ThrowsAnyAsync<Exception>(() => polling.WaitAsync(deadline.Token));
        Assert.False(deadline.IsCancellationRequested, "the revoked key's long poll went on");
        await RefusedAsync(() => sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 0 }),
            "InvalidClientTokenId", System.Net.HttpStatusCode.Forbidden);
    }

    [Fact]
    public async Task Sends_go_through_the_same_publish_admission_as_grpc_so_a_keys_publish_rate_holds_for_sqs_too()
    {
        string name = NewName("metered");
        var created = await keyed.Admin.CreateApiKeyAsync("metered-sqs", [$"*:{name}"], sqs: true, maxPublishRate: 1);
        using var sqs = Sqs(Credentials(created));
        string url = (await sqs.CreateQueueAsync(name)).QueueUrl;
        await sqs.SendMessageAsync(url, "first");   // the bucket's one second's worth
        var waiting = sqs.SendMessageAsync(url, "second");
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        while (keyed.Broker.Host.Keys.PublishesWaiting(created.Key.Id) != 1)
        {
            Assert.False(waiting.IsCompleted, $"the second send did not wait for the key's rate: {waiting.Status}");
            await Task.Delay(1, deadline.Token);
        }
        await waiting.WaitAsync(deadline.Token);
        Assert.Equal(2, (await CountsAsync(sqs, url)).Visible);
    }
}
