using System.Diagnostics;
using Amazon.Runtime;
using Amazon.SQS;
using Amazon.SQS.Model;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

/// <summary>
/// A queue's own attributes (DelaySeconds, ReceiveMessageWaitTimeSeconds, MaximumMessageSize, MessageRetentionPeriod,
/// ContentBasedDeduplication) and its tags, through the AWS SDK for .NET: set at CreateQueue or later, applied to sends
/// and receives, kept across a restart of the broker, compared by a repeated CreateQueue. (Tags over the query
/// protocol: clients/python/tests/test_sqs.py.)
/// </summary>
public sealed class SqsQueueSettingsTests : IAsyncLifetime
{
    private TestBroker _broker = null!;

    public async Task InitializeAsync() => _broker = await TestBroker.StartAsync();

    public async Task DisposeAsync() => await _broker.DisposeAsync();

    private AmazonSQSClient NewClient() => new(new BasicAWSCredentials("any", "credentials"), new AmazonSQSConfig
    {
        ServiceURL = _broker.Host.HttpAddress!.ToString(),
        AuthenticationRegion = "us-east-1",
        MaxErrorRetry = 0,
    });

    private static string NewName(string prefix) => $"{prefix}-{Guid.NewGuid():N}";

    private static async Task<AmazonSQSException> RefusedAsync(Func<Task> call, string code)
    {
        var refused = await Assert.ThrowsAnyAsync<AmazonSQSException>(call);
        Assert.Equal(code, refused.ErrorCode);
        return refused;
    }

    [Fact]
    public async Task Attributes_set_at_creation_and_later_are_shown_compared_and_kept_across_a_restart()
    {
        string name = NewName("settings");
        var attributes = new Dictionary<string, string>
        {
            ["DelaySeconds"] = "3", ["ReceiveMessageWaitTimeSeconds"] = "7", ["MaximumMessageSize"] = "2048", ["MessageRetentionPeriod"] = "86400",
        };
        string url;
        using (var sqs = NewClient())
        {
            url = (await sqs.CreateQueueAsync(new CreateQueueRequest { QueueName = name, Attributes = attributes })).QueueUrl;
            // The same attributes again: the same queue. Others: QueueNameExists, and the queue is unchanged.
            Assert.Equal(url, (await sqs.CreateQueueAsync(new CreateQueueRequest { QueueName = name, Attributes = attributes })).QueueUrl);
            await RefusedAsync(() => sqs.CreateQueueAsync(new CreateQueueRequest
            {
                QueueName = name, Attributes = new Dictionary<string, string>(attributes) { ["DelaySeconds"] = "4" },
            }), "QueueAlreadyExists");
            await sqs.SetQueueAttributesAsync(url, new() { ["ReceiveMessageWaitTimeSeconds"] = "0", ["DelaySeconds"] = "5" });
        }
        await _broker.RestartAsync();
        using var again = NewClient();
        var shown = (await again.GetQueueAttributesAsync(url, ["All"])).Attributes;
        Assert.Equal(("5", "0", "2048", "86400"),
            (shown["DelaySeconds"], shown["ReceiveMessageWaitTimeSeconds"], shown["MaximumMessageSize"], shown["MessageRetentionPeriod"]));
        // Out of range or unknown: refused by name, nothing changes.
        await RefusedAsync(() => again.SetQueueAttributesAsync(url, new() { ["ReceiveMessageWaitTimeSeconds"] = "21" }), "InvalidAttributeValue");
        await RefusedAsync(() => again.SetQueueAttributesAsync(url, new() { ["MaximumMessageSize"] = "100" }), "InvalidAttributeValue");
        await RefusedAsync(() => again.SetQueueAttributesAsync(url, new() { ["ContentBasedDeduplication"] = "true" }), "InvalidAttributeName");
        Assert.Equal("5", (await again.GetQueueAttributesAsync(url, ["DelaySeconds"])).Attributes["DelaySeconds"]);
    }

    [Fact]
    public async Task The_queues_delay_holds_a_send_without_its_own_and_a_sends_own_delay_wins()
    {
        using var sqs = NewClient();
        string url = (await sqs.CreateQueueAsync(new CreateQueueRequest
        {
            QueueName = NewName("delayed"), Attributes = new() { ["DelaySeconds"] = "600" },
        })).QueueUrl;
        await sqs.SendMessageAsync(url, "held by the queue");
        await sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "not held", DelaySeconds = 0 });
        var received = await sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, MaxNumberOfMessages = 10, WaitTimeSeconds = 5 });
        Assert.Equal("not held", Assert.Single(received.Messages).Body);
        var counts = await sqs.GetQueueAttributesAsync(url, ["All"]);
        Assert.Equal((0, 1), (counts.ApproximateNumberOfMessages, counts.ApproximateNumberOfMessagesDelayed));
    }

    [Fact]
    public async Task A_receive_without_its_own_wait_long_polls_for_the_queues_wait_time()
    {
        using var sqs = NewClient();
        string url = (await sqs.CreateQueueAsync(new CreateQueueRequest
        {
            QueueName = NewName("waiting"), Attributes = new() { ["ReceiveMessageWaitTimeSeconds"] = "1" },
        })).QueueUrl;
        // Lower bound only: an empty queue's receive answers after the queue's wait, not at once.
        var clock = Stopwatch.StartNew();
        var empty = await sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url });
        Assert.Empty(empty.Messages ?? []);
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(900), $"answered after {clock.Elapsed.TotalMilliseconds} ms");
        // A receive's own WaitTimeSeconds=0 answers at once, with what is there.
        await sqs.SendMessageAsync(url, "here");
        Assert.Equal("here", Assert.Single((await sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 5 })).Messages).Body);
    }

    [Fact]
    public async Task The_queues_maximum_message_size_refuses_a_larger_send()
    {
        using var sqs = NewClient();
        string url = (await sqs.CreateQueueAsync(new CreateQueueRequest
        {
            QueueName = NewName("small"), Attributes = new() { ["MaximumMessageSize"] = "1024" },
        })).QueueUrl;
        await RefusedAsync(() => sqs.SendMessageAsync(url, new string('x', 1025)), "InvalidParameterValue");
        var batch = await sqs.SendMessageBatchAsync(url, [new("big", new string('x', 1025)), new("fits", new string('y', 1024))]);
        Assert.Equal(("fits", "big"), (Assert.Single(batch.Successful).Id, Assert.Single(batch.Failed).Id));
        Assert.Equal(1, (await sqs.GetQueueAttributesAsync(url, ["All"])).ApproximateNumberOfMessages);
    }

    [Fact]
    public async Task Content_based_deduplication_takes_the_bodys_hash_as_the_deduplication_id()
    {
        using var sqs = NewClient();
        string url = (await sqs.CreateQueueAsync(new CreateQueueRequest
        {
            QueueName = NewName("content") + ".fifo", Attributes = new() { ["FifoQueue"] = "true", ["ContentBasedDeduplication"] = "true" },
        })).QueueUrl;
        var first = await sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "same", MessageGroupId = "g" });
        var repeated = await sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "same", MessageGroupId = "g" });
        var other = await sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "other", MessageGroupId = "g" });
        Assert.Equal(first.MessageId, repeated.MessageId);
        Assert.NotEqual(first.MessageId, other.MessageId);
        var head = Assert.Single((await sqs.ReceiveMessageAsync(new ReceiveMessageRequest
        {
            QueueUrl = url, MaxNumberOfMessages = 10, WaitTimeSeconds = 5, MessageSystemAttributeNames = ["All"],
        })).Messages);
        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData("same"u8)), head.Attributes["MessageDeduplicationId"]);
        Assert.Equal("true", (await sqs.GetQueueAttributesAsync(url, ["ContentBasedDeduplication"])).Attributes["ContentBasedDeduplication"]);
        Assert.Equal(2, (await sqs.GetQueueAttributesAsync(url, ["All"])).ApproximateNumberOfMessages
            + (await sqs.GetQueueAttributesAsync(url, ["All"])).ApproximateNumberOfMessagesNotVisible);

        // Turned off: a send must name its deduplication id again.
        await sqs.SetQueueAttributesAsync(url, new() { ["ContentBasedDeduplication"] = "false" });
        await RefusedAsync(() => sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "third", MessageGroupId = "g" }),
            "InvalidParameterValue");
        // A standard queue has no content-based deduplication.
        await RefusedAsync(() => sqs.CreateQueueAsync(new CreateQueueRequest
        {
            QueueName = NewName("standard"), Attributes = new() { ["ContentBasedDeduplication"] = "true" },
        }), "InvalidAttributeName");
    }

    [Fact]
    public async Task Tags_are_set_at_creation_added_replaced_removed_and_kept_across_a_restart()
    {
        string url;
        using (var sqs = NewClient())
        {
            url = (await sqs.CreateQueueAsync(new CreateQueueRequest
            {
                QueueName = NewName("tagged"), Tags = new() { ["team"] = "crawl", ["env"] = "prod" },
            })).QueueUrl;
            Assert.Equal(["env=prod", "team=crawl"], await TagsAsync(sqs, url));
            await sqs.TagQueueAsync(new TagQueueRequest { QueueUrl = url, Tags = new() { ["env"] = "staging", ["cost centre"] = "42 €" } });
            await sqs.UntagQueueAsync(new UntagQueueRequest { QueueUrl = url, TagKeys = ["team", "never-set"] });
            Assert.Equal(["cost centre=42 €", "env=staging"], await TagsAsync(sqs, url));
        }
        await _broker.RestartAsync();
        using var again = NewClient();
        Assert.Equal(["cost centre=42 €", "env=staging"], await TagsAsync(again, url));

        // SQS's limits: 50 tags, keys of 128 characters, values of 256, no aws: prefix. A refusal changes nothing.
        var tooMany = Enumerable.Range(0, 49).ToDictionary(i => $"t{i}", i => "v");
        await RefusedAsync(() => again.TagQueueAsync(new TagQueueRequest { QueueUrl = url, Tags = tooMany }), "InvalidParameterValue");
        await RefusedAsync(() => again.TagQueueAsync(new TagQueueRequest { QueueUrl = url, Tags = new() { [new string('k', 129)] = "v" } }), "InvalidParameterValue");
        await RefusedAsync(() => again.TagQueueAsync(new TagQueueRequest { QueueUrl = url, Tags = new() { ["k"] = new string('v', 257) } }), "InvalidParameterValue");
        await RefusedAsync(() => again.TagQueueAsync(new TagQueueRequest { QueueUrl = url, Tags = new() { ["aws:owner"] = "me" } }), "InvalidParameterValue");
        Assert.Equal(["cost centre=42 €", "env=staging"], await TagsAsync(again, url));
        await again.TagQueueAsync(new TagQueueRequest { QueueUrl = url, Tags = tooMany.Take(48).ToDictionary() });
        Assert.Equal(50, (await TagsAsync(again, url)).Count);
        await RefusedAsync(() => again.ListQueueTagsAsync(new ListQueueTagsRequest { QueueUrl = url + "-missing" }), "AWS.SimpleQueueService.NonExistentQueue");
    }

    [Fact]
    public async Task Two_tag_requests_at_once_cannot_together_pass_the_limit_of_50_and_attribute_changes_at_once_both_hold()
    {
        using var sqs = NewClient();
        string url = (await sqs.CreateQueueAsync(NewName("racing"))).QueueUrl;
        var tagging = Enumerable.Range(0, 2).Select(side => Task.Run(async () =>
        {
            try
            {
                await sqs.TagQueueAsync(new TagQueueRequest { QueueUrl = url, Tags = Enumerable.Range(0, 30).ToDictionary(i => $"s{side}-{i}", _ => "v") });
                return true;
            }
            catch (AmazonSQSException refused) when (refused.ErrorCode == "InvalidParameterValue")
            {
                return false;
            }
        })).ToList();
        Assert.Equal(1, (await Task.WhenAll(tagging)).Count(accepted => accepted));
        Assert.Equal(30, (await TagsAsync(sqs, url)).Count);

        // Two requests changing different attributes: neither writes back the other's old value.
        await Task.WhenAll(
            sqs.SetQueueAttributesAsync(url, new() { ["DelaySeconds"] = "7" }),
            sqs.SetQueueAttributesAsync(url, new() { ["ReceiveMessageWaitTimeSeconds"] = "3" }));
        var shown = (await sqs.GetQueueAttributesAsync(url, ["All"])).Attributes;
        Assert.Equal(("7", "3"), (shown["DelaySeconds"], shown["ReceiveMessageWaitTimeSeconds"]));

        // The same for the group's rules: a visibility timeout and a redrive policy set at once both hold.
        string deadLetters = NewName("racing-dlq");
        await sqs.CreateQueueAsync(deadLetters);
        string redrive = $"{{\"deadLetterTargetArn\":\"arn:aws:sqs:local:000000000000:{deadLetters}\",\"maxReceiveCount\":\"4\"}}";
        await Task.WhenAll(
            sqs.SetQueueAttributesAsync(url, new() { ["VisibilityTimeout"] = "45" }),
            sqs.SetQueueAttributesAsync(url, new() { ["RedrivePolicy"] = redrive }));
        shown = (await sqs.GetQueueAttributesAsync(url, ["All"])).Attributes;
        Assert.Equal("45", shown["VisibilityTimeout"]);
        Assert.Contains(deadLetters, shown["RedrivePolicy"]);
    }

    private static async Task<List<string>> TagsAsync(AmazonSQSClient sqs, string url) =>
        ((await sqs.ListQueueTagsAsync(new ListQueueTagsRequest { QueueUrl = url })).Tags ?? []).Select(tag => $"{tag.Key}={tag.Value}").Order(StringComparer.Ordinal).ToList();
}
