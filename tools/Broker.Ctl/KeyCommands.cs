using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Broker.Client;

namespace Broker.Ctl;

/// <summary><c>brokerctl keys create | list | revoke</c>: API keys over the Admin service (the caller's key needs the <c>keys</c> grant).</summary>
internal static class KeyCommands
{
    public static Command Keys(Func<ParseResult, (BrokerClient Client, Output Output)> open)
    {
        var keys = new Command("keys", "create, list and revoke API keys (docs/security.md)");

        var name = new Argument<string>("name") { Description = "who the key is for" };
        var grants = new Option<string[]>("--grant", "-g")
        {
            Description = "a permission, action:topics[:groups] (publish:orders.*, consume:orders:workers-*, admin:*, keys, *); repeat for more",
            Required = true,
            AllowMultipleArgumentsPerToken = false,
        };
        var sqs = new Option<bool>("--sqs") { Description = "also for the SQS API: the broker keeps the secret to check signatures" };
        var rate = new Option<int>("--max-publish-rate") { Description = "most messages a second the key may publish (default: no limit); past it publishes wait" };
        var create = new Command("create", "create a key and print its token (shown this once)") { name, grants, sqs, rate };
        create.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = open(parse);
            using var _ = client;
            var created = await client.CreateApiKeyAsync(parse.GetValue(name)!, parse.GetValue(grants)!, parse.GetValue(sqs), cancellationToken, parse.GetValue(rate));
            var document = new JsonObject
            {
                ["id"] = created.Key.Id,
                ["name"] = created.Key.Name,
                ["grants"] = new JsonArray(created.Key.Grants.Select(grant => (JsonNode)grant).ToArray()),
                ["token"] = created.Token,
            };
            string text = $"created key {created.Key.Id} ({created.Key.Name}); its token, shown this once:\n{created.Token}";
            if (created.Key.Sqs)
            {
                string secret = created.Token[(created.Token.IndexOf('.') + 1)..];
                document["awsAccessKeyId"] = created.Key.Id;
                document["awsSecretAccessKey"] = secret;
                text += $"\nSQS: AWS_ACCESS_KEY_ID={created.Key.Id} AWS_SECRET_ACCESS_KEY={secret}";
            }
            output.Line(text, document);
            return 0;
        });
        keys.Subcommands.Add(create);

        var list = new Command("list", "every key with its grants (never a secret)");
        list.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = open(parse);
            using var _ = client;
            var all = await client.ListApiKeysAsync(cancellationToken);
            var document = new JsonArray(all.Select(key => (JsonNode)new JsonObject
            {
                ["id"] = key.Id,
                ["name"] = key.Name,
                ["grants"] = new JsonArray(key.Grants.Select(grant => (JsonNode)grant).ToArray()),
                ["createdUnixMs"] = key.CreatedUnixMs,
                ["sqs"] = key.Sqs,
                ["maxPublishRate"] = key.MaxPublishRate,
            }).ToArray());
            output.Table(["id", "name", "grants", "sqs", "max msg/s", "created"], all.Select(key => new object?[]
            {
                key.Id, key.Name, string.Join(' ', key.Grants), key.Sqs ? "yes" : "", key.MaxPublishRate == 0 ? "" : key.MaxPublishRate.ToString(CultureInfo.InvariantCulture),
                DateTimeOffset.FromUnixTimeMilliseconds(key.CreatedUnixMs).ToString("u", CultureInfo.InvariantCulture),
            }), document);
            return 0;
        });
        keys.Subcommands.Add(list);

        var id = new Argument<string>("id") { Description = "the key's id (the token's part before the dot)" };
        var revoke = new Command("revoke", "revoke a key: its calls fail from now on, its open streams end") { id };
        revoke.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = open(parse);
            using var _ = client;
            await client.RevokeApiKeyAsync(parse.GetValue(id)!, cancellationToken);
            output.Line($"revoked key {parse.GetValue(id)}", new JsonObject { ["revoked"] = parse.GetValue(id) });
            return 0;
        });
        keys.Subcommands.Add(revoke);
        return keys;
    }
}
