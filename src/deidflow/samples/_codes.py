"""Code lists behind the synthetic hospital extract: provinces and postcodes, departments,
ICD-10 diagnoses, laboratory tests, clinical phrases. Data only; the generator samples them.

Every string here is free of ASCII commas, quotes and line breaks: the CSV writer refuses to
quote, so a stray comma fails loudly instead of producing a file other readers split wrongly.
"""

from __future__ import annotations

# GB/T 2260 province prefix -> (province name, is a municipality, postcode prefix).
# Postcode prefixes are the first two digits China Post assigns to the province's capital.
PROVINCES: dict[str, tuple[str, bool, str]] = {
    "11": ("北京市", True, "10"),
    "12": ("天津市", True, "30"),
    "13": ("河北省", False, "05"),
    "14": ("山西省", False, "03"),
    "15": ("内蒙古自治区", False, "01"),
    "21": ("辽宁省", False, "11"),
    "22": ("吉林省", False, "13"),
    "23": ("黑龙江省", False, "15"),
    "31": ("上海市", True, "20"),
    "32": ("江苏省", False, "21"),
    "33": ("浙江省", False, "31"),
    "34": ("安徽省", False, "23"),
    "35": ("福建省", False, "35"),
    "36": ("江西省", False, "33"),
    "37": ("山东省", False, "25"),
    "41": ("河南省", False, "45"),
    "42": ("湖北省", False, "43"),
    "43": ("湖南省", False, "41"),
    "44": ("广东省", False, "51"),
    "45": ("广西壮族自治区", False, "53"),
    "46": ("海南省", False, "57"),
    "50": ("重庆市", True, "40"),
    "51": ("四川省", False, "61"),
    "52": ("贵州省", False, "55"),
    "53": ("云南省", False, "65"),
    "54": ("西藏自治区", False, "85"),
    "61": ("陕西省", False, "71"),
    "62": ("甘肃省", False, "73"),
    "63": ("青海省", False, "81"),
    "64": ("宁夏回族自治区", False, "75"),
    "65": ("新疆维吾尔自治区", False, "83"),
}

# Three real prefecture-level cities per province (the capital first), so an address names
# a city of the province its resident ID's region code belongs to.
PROVINCE_CITIES: dict[str, tuple[str, ...]] = {
    "13": ("石家庄市", "唐山市", "保定市"),
    "14": ("太原市", "大同市", "运城市"),
    "15": ("呼和浩特市", "包头市", "赤峰市"),
    "21": ("沈阳市", "大连市", "鞍山市"),
    "22": ("长春市", "吉林市", "延边朝鲜族自治州"),
    "23": ("哈尔滨市", "齐齐哈尔市", "大庆市"),
    "32": ("南京市", "苏州市", "无锡市"),
    "33": ("杭州市", "宁波市", "温州市"),
    "34": ("合肥市", "芜湖市", "安庆市"),
    "35": ("福州市", "厦门市", "泉州市"),
    "36": ("南昌市", "赣州市", "九江市"),
    "37": ("济南市", "青岛市", "烟台市"),
    "41": ("郑州市", "洛阳市", "南阳市"),
    "42": ("武汉市", "宜昌市", "襄阳市"),
    "43": ("长沙市", "株洲市", "衡阳市"),
    "44": ("广州市", "深圳市", "佛山市"),
    "45": ("南宁市", "柳州市", "桂林市"),
    "46": ("海口市", "三亚市", "儋州市"),
    "51": ("成都市", "绵阳市", "南充市"),
    "52": ("贵阳市", "遵义市", "六盘水市"),
    "53": ("昆明市", "曲靖市", "大理白族自治州"),
    "54": ("拉萨市", "日喀则市", "昌都市"),
    "61": ("西安市", "宝鸡市", "咸阳市"),
    "62": ("兰州市", "天水市", "酒泉市"),
    "63": ("西宁市", "海东市", "海西蒙古族藏族自治州"),
    "64": ("银川市", "石嘴山市", "吴忠市"),
    "65": ("乌鲁木齐市", "克拉玛依市", "伊犁哈萨克自治州"),
}

# The hospital is in Shanghai, so most patients live there; these district codes come from
# the same GB/T 2260 list as Faker's, with their names, so Shanghai addresses name the
# district the resident ID says.
SHANGHAI_DISTRICTS: dict[str, str] = {
    "310101": "黄浦区",
    "310104": "徐汇区",
    "310105": "长宁区",
    "310106": "静安区",
    "310107": "普陀区",
    "310108": "闸北区",
    "310109": "虹口区",
    "310110": "杨浦区",
    "310112": "闵行区",
    "310113": "宝山区",
    "310114": "嘉定区",
    "310115": "浦东新区",
    "310116": "金山区",
    "310117": "松江区",
    "310118": "青浦区",
    "310120": "奉贤区",
    "310230": "崇明县",
}
SHANGHAI_SHARE = 0.6

# Mainland mobile prefixes in use (MIIT numbering plan).
MOBILE_PREFIXES = (
    "130 131 132 133 134 135 136 137 138 139 147 150 151 152 153 155 156 157 158 159 "
    "166 173 175 176 177 178 180 181 182 183 184 185 186 187 188 189 191 195 198 199"
).split()

# Seventh national census shares, rounded; the remainder spread over the listed minorities.
ETHNICITIES: tuple[tuple[str, float], ...] = (
    ("汉族", 0.915),
    ("壮族", 0.014),
    ("回族", 0.012),
    ("满族", 0.010),
    ("维吾尔族", 0.008),
    ("苗族", 0.008),
    ("彝族", 0.007),
    ("土家族", 0.007),
    ("藏族", 0.005),
    ("蒙古族", 0.005),
    ("朝鲜族", 0.009),
)

# Age brackets in whole years [low, high) at the as-of date and their share of patients:
# ~6% minors under 14 (PIPL art. 31) and ~2% over 89 (the ">89" group of the risk rules).
AGE_BRACKETS: tuple[tuple[int, int, float], ...] = (
    (0, 14, 0.06),
    (14, 18, 0.02),
    (18, 40, 0.25),
    (40, 65, 0.38),
    (65, 90, 0.27),
    (90, 105, 0.02),
)

DEPARTMENTS = (
    "心血管内科",
    "内分泌科",
    "呼吸内科",
    "消化内科",
    "神经内科",
    "普通外科",
    "骨科",
    "妇科",
    "儿科",
    "肾内科",
    "肿瘤科",
    "急诊科",
)

# Department mix per patient group: children, adult men, adult women (same order as above).
DEPARTMENT_WEIGHTS: dict[str, tuple[float, ...]] = {
    "child": (0, 0, 0, 0, 0, 0.04, 0.04, 0, 0.80, 0, 0, 0.12),
    "male": (0.15, 0.13, 0.12, 0.11, 0.09, 0.09, 0.08, 0, 0, 0.06, 0.07, 0.10),
    "female": (0.12, 0.12, 0.10, 0.10, 0.08, 0.07, 0.08, 0.10, 0, 0.05, 0.06, 0.12),
}

# ICD-10 code, Chinese name, department, chief complaint (for the note).
DIAGNOSES: tuple[tuple[str, str, str, str], ...] = (
    ("I10", "原发性高血压", "心血管内科", "反复头晕头痛"),
    ("I25.1", "动脉粥样硬化性心脏病", "心血管内科", "活动后胸闷胸痛"),
    ("I48.9", "心房颤动", "心血管内科", "阵发性心悸"),
    ("I50.9", "心力衰竭", "心血管内科", "气促伴双下肢水肿"),
    ("E11.9", "2型糖尿病", "内分泌科", "口干多饮多尿"),
    ("E78.5", "高脂血症", "内分泌科", "体检发现血脂升高"),
    ("E05.9", "甲状腺功能亢进症", "内分泌科", "心悸多汗消瘦"),
    ("E03.9", "甲状腺功能减退症", "内分泌科", "乏力怕冷"),
    ("J18.9", "肺炎", "呼吸内科", "发热咳嗽咳痰"),
    ("J44.9", "慢性阻塞性肺疾病", "呼吸内科", "反复咳嗽咳痰伴气喘"),
    ("J45.9", "支气管哮喘", "呼吸内科", "发作性喘息"),
    ("J20.9", "急性支气管炎", "呼吸内科", "咳嗽"),
    ("K29.7", "慢性胃炎", "消化内科", "上腹部隐痛"),
    ("K21.9", "胃食管反流病", "消化内科", "反酸烧心"),
    ("K25.9", "胃溃疡", "消化内科", "餐后上腹痛"),
    ("K76.0", "脂肪肝", "消化内科", "体检发现肝功能异常"),
    ("I63.9", "脑梗死", "神经内科", "突发右侧肢体无力"),
    ("G43.9", "偏头痛", "神经内科", "反复发作性头痛"),
    ("G40.9", "癫痫", "神经内科", "发作性意识丧失伴抽搐"),
    ("G20", "帕金森病", "神经内科", "肢体震颤伴动作迟缓"),
    ("K35.8", "急性阑尾炎", "普通外科", "转移性右下腹痛"),
    ("K40.9", "腹股沟疝", "普通外科", "腹股沟区可复性包块"),
    ("K80.2", "胆囊结石", "普通外科", "右上腹痛"),
    ("M17.9", "膝关节骨性关节炎", "骨科", "双膝关节疼痛"),
    ("M51.2", "腰椎间盘突出症", "骨科", "腰痛伴左下肢放射痛"),
    ("S72.0", "股骨颈骨折", "骨科", "跌倒后髋部疼痛"),
    ("M81.9", "骨质疏松症", "骨科", "腰背部疼痛"),
    ("N76.0", "急性阴道炎", "妇科", "白带增多伴瘙痒"),
    ("D25.9", "子宫平滑肌瘤", "妇科", "月经量增多"),
    ("N83.2", "卵巢囊肿", "妇科", "下腹部坠胀"),
    ("J06.9", "急性上呼吸道感染", "儿科", "发热流涕"),
    ("A09", "感染性腹泻", "儿科", "腹泻伴呕吐"),
    ("B08.4", "手足口病", "儿科", "发热伴手足皮疹"),
    ("J21.9", "急性毛细支气管炎", "儿科", "咳嗽伴喘息"),
    ("N18.9", "慢性肾脏病", "肾内科", "夜尿增多伴乏力"),
    ("N39.0", "泌尿道感染", "肾内科", "尿频尿急尿痛"),
    ("N20.0", "肾结石", "肾内科", "腰部绞痛"),
    ("C34.9", "肺恶性肿瘤", "肿瘤科", "咳嗽伴痰中带血"),
    ("C16.9", "胃恶性肿瘤", "肿瘤科", "上腹不适伴消瘦"),
    ("C18.9", "结肠恶性肿瘤", "肿瘤科", "大便习惯改变伴便血"),
    ("C22.0", "肝细胞癌", "肿瘤科", "右上腹胀痛"),
    ("R10.4", "腹痛", "急诊科", "急性腹痛"),
    ("S06.0", "脑震荡", "急诊科", "头部外伤后头痛"),
    ("T78.4", "过敏反应", "急诊科", "全身皮疹伴瘙痒"),
)

# Secondary diagnoses are common chronic conditions, by patient group (ICD-10 codes above).
COMORBIDITIES: dict[str, tuple[str, ...]] = {
    "child": ("J06.9", "A09", "J45.9"),
    "adult": ("I10", "E11.9", "E78.5", "K76.0", "K29.7", "M81.9", "N18.9"),
}

# Test code, Chinese name, unit, distribution ("normal" mean/sd or "lognormal" median/sigma),
# decimals, lower clip. Ranges follow common Chinese reference intervals.
LAB_TESTS: tuple[tuple[str, str, str, str, float, float, int, float], ...] = (
    ("GLU", "空腹血糖", "mmol/L", "lognormal", 5.4, 0.22, 1, 2.5),
    ("HBA1C", "糖化血红蛋白", "%", "lognormal", 5.8, 0.15, 1, 4.0),
    ("WBC", "白细胞计数", "10^9/L", "lognormal", 6.5, 0.3, 2, 1.0),
    ("RBC", "红细胞计数", "10^12/L", "normal", 4.6, 0.5, 2, 2.0),
    ("HGB", "血红蛋白", "g/L", "normal", 135.0, 16.0, 0, 60.0),
    ("PLT", "血小板计数", "10^9/L", "normal", 230.0, 60.0, 0, 20.0),
    ("ALT", "丙氨酸氨基转移酶", "U/L", "lognormal", 22.0, 0.5, 0, 3.0),
    ("AST", "天门冬氨酸氨基转移酶", "U/L", "lognormal", 23.0, 0.4, 0, 5.0),
    ("CREA", "肌酐", "μmol/L", "lognormal", 75.0, 0.3, 0, 20.0),
    ("BUN", "尿素氮", "mmol/L", "lognormal", 5.0, 0.3, 1, 1.0),
    ("TC", "总胆固醇", "mmol/L", "normal", 4.8, 0.9, 2, 2.0),
    ("TG", "甘油三酯", "mmol/L", "lognormal", 1.4, 0.5, 2, 0.2),
    ("LDLC", "低密度脂蛋白胆固醇", "mmol/L", "normal", 2.9, 0.8, 2, 0.5),
    ("K", "血钾", "mmol/L", "normal", 4.2, 0.4, 1, 2.5),
    ("NA", "血钠", "mmol/L", "normal", 140.0, 3.0, 0, 120.0),
    ("CRP", "C反应蛋白", "mg/L", "lognormal", 3.0, 1.0, 1, 0.1),
)

ENCOUNTER_TYPES = ("门诊", "住院", "急诊")

# Note phrases. Durations, examinations and plans are generic so that any diagnosis reads
# plausibly; the chief complaint and diagnosis come from DIAGNOSES.
DURATIONS = ("2天", "3天", "1周", "半月", "1月", "3月", "半年", "1年余", "数年")
HISTORIES = (
    "患者自诉症状逐渐加重，休息后无明显缓解，无发热寒战，饮食睡眠尚可，大小便无殊。",
    "起病以来精神可，胃纳一般，体重无明显变化，曾于外院就诊，具体用药不详。",
    "既往体健，否认肝炎结核等传染病史，否认手术外伤史，否认药物过敏史。",
    "既往有高血压病史多年，规律服药，血压控制尚可，否认糖尿病史。",
    "症状呈间歇性发作，与活动相关，无明显诱因，未予特殊处理。",
    "曾自行服用药物，症状稍有缓解，近日再次加重，遂来我院就诊。",
)
EXAMS = (
    "查体：神志清，精神可，心肺听诊未闻及明显异常，腹软，无压痛。",
    "查体：体温36.8℃，脉搏82次/分，血压128/76mmHg，双肺呼吸音清。",
    "查体：体温38.2℃，咽部充血，双侧扁桃体无肿大，心率96次/分。",
    "查体：一般情况可，心律齐，各瓣膜区未闻及杂音，双下肢无水肿。",
    "查体：神志清楚，对答切题，四肢肌力5级，病理征未引出。",
)
PLANS = (
    "处理：完善血常规及生化检查，予对症支持治疗，嘱定期门诊随访。",
    "处理：收住入院，完善相关检查，必要时手术治疗，已告知病情及风险。",
    "处理：予口服药物治疗，注意休息，清淡饮食，如有不适及时就诊。",
    "处理：留观，予补液抗感染治疗，复查血常规及C反应蛋白。",
    "处理：调整用药方案，监测血压血糖，两周后复诊。",
)
RELATIONS = ("配偶", "儿子", "女儿", "母亲", "父亲", "兄弟", "姐妹")
CHILD_RELATIONS = ("母亲", "父亲", "祖母", "外婆")
